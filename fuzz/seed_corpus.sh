#!/usr/bin/env bash
# Copies the fixture videos into fuzz/corpus/<target>/ as seed corpora. The copies are
# not committed (fuzz/.gitignore); run this before `cargo fuzz run`.
#
#   bash fuzz/seed_corpus.sh            # from anywhere
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
videos="$here/../tests/data/video"
corpus="$here/corpus"

seed() {
    local target="$1"
    shift
    mkdir -p "$corpus/$target"
    for f in "$@"; do
        [ -f "$videos/$f" ] && cp -f "$videos/$f" "$corpus/$target/$f"
    done
}

cd "$videos"
# Every fixture whose container the target parses, plus the must-fail ones.
seed demux_mp4 *.mp4 random.bin
seed demux_mkv *.mkv *.webm random.bin
seed demux_annexb_h264 *.h264 random.bin
seed demux_annexb_hevc *.hevc random.bin
# empty.mp4 is 0 bytes: libFuzzer always tries the empty input anyway.
rm -f "$corpus/demux_mp4/empty.mp4"

for t in "$corpus"/*/; do
    echo "$(basename "$t"): $(ls "$t" | wc -l) files"
done
