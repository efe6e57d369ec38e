"""The clearing core: split payments booked in a double-entry ledger."""

import os

# gRPC's post-fork handler can kill a child of subprocess.Popen before it execs (grpc/grpc
# issue 43055: the restarted epoll poller finds its descriptor closed and aborts; seen here as
# an embedded redis-server dying with SIGABRT at start). Every child this project forks execs
# at once, so gRPC needs no fork support. Set before grpc is first loaded.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

__version__ = "0.1.0"
