"""What the tests/ops checks share: failures collected (each printed as it happens) and
free loopback ports."""
import socket

errors = []


def fail(msg):
    errors.append(msg)
    print("FAIL:", msg)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

