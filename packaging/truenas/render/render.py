#!/usr/bin/env python3
"""Renders a TrueNAS catalog app (here packaging/truenas) into the compose file TrueNAS runs.

Like the catalog's tooling: the values are the app's ix_values.yaml deep-merged with a values file
(a test_values file, or what the TrueNAS UI would submit), an ``ix_context`` is added, and
templates/docker-compose.yaml is rendered with Jinja2 (extensions ``do`` and ``loopcontrols``;
undefined values are errors) with ``values`` and ``ix_lib`` (our library subset, ixlib.py, as
``ix_lib.base``). The template prints ``tpl.render() | tojson``; that JSON is written as YAML.

    render.py --app DIR --values FILE [--set JSON]... [--out FILE] [--json-out FILE]
              [--compose-v1-out FILE] [--used-keys FILE]

--set JSON         a JSON object deep-merged over the values (a test's ports and host paths)
--out FILE         the compose file (YAML); stdout when not given
--json-out FILE    the same as JSON
--compose-v1-out   a copy for docker-compose 1.x (Debian's; TrueNAS runs Docker Compose v2),
                   whose schema predates two Compose Specification keys the library writes:
                   healthcheck.start_interval and volumes[].bind.create_host_path. Only those
                   are removed.
--used-keys FILE   every values key the template or the library read, one dotted path a line
                   (list items as ``name[]``), to check that each question is used
"""

import argparse
import json
import sys
import types
from pathlib import Path

import jinja2
import yaml

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
import ixlib  # noqa: E402

USED = set()


class TrackedDict(dict):
    """A dict that records the dotted path of every key read through [] or get()."""

    def __init__(self, data, path):
        super().__init__({k: track(v, f"{path}.{k}" if path else k) for k, v in data.items()})
        self._path = path

    def _key(self, key):
        return f"{self._path}.{key}" if self._path else str(key)

    def __getitem__(self, key):
        USED.add(self._key(key))
        return super().__getitem__(key)

    def get(self, key, default=None):
        USED.add(self._key(key))
        return super().get(key, default)

    def __or__(self, other):
        # `a | b` (the library merges a port's settings so) keeps recording reads of a's keys.
        merged = TrackedDict({}, self._path)
        dict.update(merged, self)
        dict.update(merged, other)
        return merged

    def __deepcopy__(self, memo):
        return {k: __import__("copy").deepcopy(v, memo) for k, v in dict.items(self)}


class TrackedList(list):
    def __init__(self, data, path):
        super().__init__(track(v, f"{path}[]") for v in data)


def track(value, path):
    if isinstance(value, dict):
        return TrackedDict(value, path)
    if isinstance(value, list):
        return TrackedList(value, path)
    return value


def merge(base, over):
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def load_yaml(path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def for_compose_v1(doc):
    doc = json.loads(json.dumps(doc))
    for svc in doc.get("services", {}).values():
        svc.get("healthcheck", {}).pop("start_interval", None)
        for vol in svc.get("volumes", []):
            if isinstance(vol, dict):
                vol.get("bind", {}).pop("create_host_path", None)
    return doc


def render(app_dir, values):
    app = load_yaml(app_dir / "app.yaml")
    values.setdefault(
        "ix_context",
        {
            "app_name": app.get("name", app_dir.name),
            "app_metadata": {"title": app.get("title", ""), "train": app.get("train", "")},
        },
    )
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(app_dir / "templates")),
        extensions=["jinja2.ext.do", "jinja2.ext.loopcontrols"],
        undefined=jinja2.StrictUndefined,
    )
    ix_lib = types.SimpleNamespace(base=types.SimpleNamespace(render=ixlib, **vars(ixlib)))
    text = env.get_template("docker-compose.yaml").render(values=track(values, ""), ix_lib=ix_lib)
    return json.loads(text)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--app", required=True, type=Path)
    p.add_argument("--values", required=True, type=Path)
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--out", type=Path)
    p.add_argument("--json-out", type=Path)
    p.add_argument("--compose-v1-out", type=Path)
    p.add_argument("--used-keys", type=Path)
    a = p.parse_args()

    values = merge(load_yaml(a.app / "ix_values.yaml"), load_yaml(a.values))
    for s in a.set:
        values = merge(values, json.loads(s))
    try:
        doc = render(a.app, values)
    except ixlib.RenderError as e:
        print(f"render: {e}", file=sys.stderr)
        return 1
    except jinja2.TemplateError as e:
        print(f"render: template error: {e}", file=sys.stderr)
        return 1

    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    if a.json_out:
        a.json_out.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    if a.compose_v1_out:
        a.compose_v1_out.write_text(yaml.safe_dump(for_compose_v1(doc), sort_keys=False), encoding="utf-8")
    if a.used_keys:
        a.used_keys.write_text("".join(k + "\n" for k in sorted(USED)), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
