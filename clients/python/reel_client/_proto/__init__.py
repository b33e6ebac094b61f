"""Generated gRPC stubs of reel.v1 (scripts/gen-python-proto.sh; do not edit)."""

from . import reel_pb2, reel_pb2_grpc

__all__ = ["reel_pb2", "reel_pb2_grpc"]
