#!/usr/bin/python3
"""Writes the fuzz_safetensors seed files into fuzz_safetensors/ next to this script (run it to regenerate them)."""
import json
import os
import struct

here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz_safetensors")


def image(header, data=b"", hlen=None):
    text = header if isinstance(header, bytes) else json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(text) if hlen is None else hlen) + text + data


seeds = {
    "two_tensors": image({"__metadata__": {"format": "pt"},
                          "a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
                          "b": {"dtype": "BF16", "shape": [3], "data_offsets": [16, 22]}}, bytes(range(22))),
    "all_dtypes": image({"f": {"dtype": "F16", "shape": [1], "data_offsets": [14, 16]},
                         "i": {"dtype": "I32", "shape": [], "data_offsets": [8, 12]},
                         "l": {"dtype": "I64", "shape": [1, 1, 1, 1, 1], "data_offsets": [0, 8]},
                         "e": {"dtype": "F32", "shape": [0, 7], "data_offsets": [12, 12]}}, bytes(16)),
    "empty_header": image({}),
    "overlap": image({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12)),
    "bad_length": image(b"{}", hlen=1 << 40),
    "misaligned": image(b'{"m":{"dtype":"F32","shape":[1],"data_offsets":[1,5]}}', bytes(6)),
}

for name, blob in seeds.items():
    with open(os.path.join(here, name + ".safetensors"), "wb") as f:
        f.write(blob)
