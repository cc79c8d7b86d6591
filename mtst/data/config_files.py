"""Reading the YAML/JSON files a user writes (task configs, `mtst-train` argument files) so that the file means what
it reads: a key given twice in one mapping is an error (yaml and json keep the last one silently), and so are YAML
aliases (`*name`, which let a few hundred bytes expand into gigabytes once printed or copied) and files over
`MAX_CONFIG_BYTES`."""

from __future__ import annotations

import json
import os
from typing import Any

import yaml

from mtst.data.errors import one_line, short

__all__ = ["MAX_CONFIG_BYTES", "ConfigFileError", "read_config_file"]

MAX_CONFIG_BYTES = 4 * 1024 * 1024  # a task config or an argument file is a few kilobytes


class ConfigFileError(ValueError):
    """A config file cannot be read as written. The message continues a sentence that names the file ("... is not
    valid YAML: line 7: ...")."""


class _StrictLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses aliases and a key repeated in one mapping, naming the line."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ConfigFileError(
                f"uses the YAML alias {short('*' + str(event.anchor), 40)} on line {event.start_mark.line + 1}, and "
                "MTST config files take no aliases (a few of them can expand into gigabytes): write the value out"
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key: SafeLoader's own error names it
                continue
            if first != key_node.start_mark.line + 1:
                raise ConfigFileError(
                    f"gives the key {short(key)} twice in one mapping (lines {first} and "
                    f"{key_node.start_mark.line + 1}), and YAML would keep only the last one: give each key once"
                )
        return super().construct_mapping(node, deep=deep)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise ConfigFileError(
                f"gives the key {short(key)} twice in one object, and JSON readers keep only the last one: give each "
                "key once"
            )
        seen.add(key)
    return dict(pairs)


def read_config_file(path: str | os.PathLike) -> Any:
    """The value in a .json file (read as JSON) or a YAML file. Raises `ConfigFileError` for a file over
    `MAX_CONFIG_BYTES`, an unreadable file, a syntax error, a key given twice in one mapping and a YAML alias."""
    try:
        size = os.path.getsize(path)
        if size > MAX_CONFIG_BYTES:
            raise ConfigFileError(
                f"is {size:,} bytes, more than the {MAX_CONFIG_BYTES // 2**20} MB a config file may have (data "
                "belongs in the files it names)"
            )
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigFileError(f"could not be read: {err}") from err
    extension = os.path.splitext(os.fspath(path))[1].lstrip(".")
    is_json = extension.lower() == "json"
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys) if is_json else yaml.load(text, _StrictLoader)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ConfigFileError(f"is not valid {extension or 'YAML'}: {one_line(err)}") from err
    except RecursionError as err:
        raise ConfigFileError("nests lists or mappings too deeply to be read") from err
