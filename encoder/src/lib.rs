//! reel-encoder: vision towers (Qwen2.5-VL first) from Hugging Face weights.
