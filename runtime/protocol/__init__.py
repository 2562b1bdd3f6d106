"""Wire protocol: generated stubs (snakepit.bridge) and the codec that is the only user of them."""

from . import snakepit_bridge_pb2 as pb
from . import snakepit_bridge_pb2_grpc as pb_grpc

PROTOCOL_VERSION = "snakepit.bridge/0.13+pit.1"

__all__ = ["pb", "pb_grpc", "PROTOCOL_VERSION"]
