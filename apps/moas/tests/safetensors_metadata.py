"""The "__metadata__" of a safetensors file, read and rewritten with the standard library only, for the CLI tests:
the step a checkpoint's weights and optimizer state record, and checkpoints with damaged moas train metadata.

As a program: safetensors_metadata.py SOURCE DEST PATCH writes DEST, a copy of the weights SOURCE whose "user"
metadata (what moas train stores) has PATCH, a JSON object, merged into it key by key.
"""
import json
import struct
import sys


def read_header(path):
    with open(path, "rb") as f:
        length = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(length)), 8 + length


def metadata(path):
    return read_header(path)[0].get("__metadata__", {})


def user_metadata(path):
    return json.loads(metadata(path)["user"])


def model_step(path):
    """The step moas train recorded in a checkpoint's weights."""
    return user_metadata(path)["step"]


def optimizer_step(path):
    """The step libmoas recorded in an optimizer state."""
    return int(metadata(path)["step"])


def write_with_user_metadata(source, dest, patch):
    header, data_start = read_header(source)
    user = json.loads(header["__metadata__"]["user"])
    user.update(patch)
    header["__metadata__"]["user"] = json.dumps(user)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data stays 8-byte aligned
    with open(source, "rb") as f:
        f.seek(data_start)
        data = f.read()
    with open(dest, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)) + encoded + data)


if __name__ == "__main__":
    write_with_user_metadata(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]))
