"""gRPC servicers: translate protobuf <-> domain, nothing else; plus auth and errors."""
