"""Generated protobuf and gRPC modules of the ``tributary.v1`` API (see ``generate.sh``)."""
