"""Print one backend's table and one model's [[models]] block from a sluice config, as TOML.

Usage: tables.py CONFIG BACKEND MODEL  (soak.sh puts config/sluice.toml's embedded
backend and model into the soak's config this way, so the soak serves what ships).
"""

import json
import sys
import tomllib


def value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(value(x) for x in v) + "]"
    raise ValueError(f"cannot write {v!r}")


def keys(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from keys(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k} = {value(v)}"


def main():
    path, backend, model = sys.argv[1:4]
    with open(path, "rb") as f:
        cfg = tomllib.load(f)
    print(f"[backends.{backend}]")
    print("\n".join(keys(cfg["backends"][backend])))
    print()
    block = next(m for m in cfg["models"] if m["name"] == model)
    print("[[models]]")
    print("\n".join(keys(block)))


if __name__ == "__main__":
    main()
