"""Reading YAML from untrusted sources (config files, ``--set`` values): refused before it expands.

PyYAML's ``safe_load`` builds what it reads without limits: a 531-byte file of nested aliases
expands to gigabytes once copied (issue 23), a key given twice silently keeps the last value, and
a 5,000-digit number fails later with a message that names no key. :func:`parse_yaml` refuses
aliases while composing (before any value exists), duplicate keys, and numbers longer than
:data:`MAX_NUMBER_CHARS` characters, naming the key and line; it reads scalars by YAML 1.2's core
schema. :func:`config_dumper` writes YAML that it reads back unchanged.

PyYAML is imported when a function here runs (it is a workstation dependency).
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any

from roverlite.core.errors import ConfigError

__all__ = ["MAX_NUMBER_CHARS", "config_dumper", "parse_yaml"]

# Longest number read; no config value needs more (Python refuses to turn integers of more than
# 4,300 digits into text, with a message that names no key).
MAX_NUMBER_CHARS = 100


def parse_yaml(text: str, where: str, key: str = "") -> Any:
    """Parse YAML ``text`` from an untrusted source, refusing what could expand or mislead.

    Refused, before any value is built: aliases (``*name``; also merge keys, which need them),
    a key given twice in one mapping, and numbers longer than :data:`MAX_NUMBER_CHARS`
    characters. Scalars follow YAML 1.2's core schema: ``1e-3`` is a number (YAML 1.1 reads it
    as a string), ``yes``/``no``/``on``/``off`` are strings, ``010`` is ten, dates and ``1:30``
    stay strings.

    Args:
        text: the YAML document.
        where: names the source in messages (a config file, an override).
        key: the dotted key ``text`` is the value of (for an override), prefixed to key names.

    Raises:
        roverlite.config.ConfigError: an alias, a duplicate key or an over-long number (naming the
            key and line).
        yaml.YAMLError: not valid YAML.
    """
    import yaml

    loader = _config_loader()(text)
    loader.where, loader.keys = where, [key] if key else []
    try:
        return loader.get_single_data()
    except (ConfigError, yaml.YAMLError):
        raise
    except (ValueError, TypeError, AttributeError, OverflowError) as err:
        # An explicit tag on text it cannot hold (`!!int abc`, `!!timestamp x`): PyYAML's constructors
        # raise plain Python errors there; report it as the invalid YAML it is.
        raise yaml.constructor.ConstructorError(None, None, f"cannot construct a value ({err})") from None
    finally:
        loader.dispose()


_YAML12_INT = r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"
_YAML12_FLOAT = r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
_YAML12_BOOL = r"^(?:true|True|TRUE|false|False|FALSE)$"
# YAML 1.1 resolvers replaced by the 1.2 core schema above, or dropped (timestamps, merge keys).
_YAML11_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("bool", "int", "float", "timestamp", "merge")}


def _yaml12_resolvers(base: Any) -> Any:
    """Give the loader or dumper class ``base`` the YAML 1.2 core schema's implicit resolvers."""
    base.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag not in _YAML11_TAGS]
        for first, resolvers in base.yaml_implicit_resolvers.items()
    }
    base.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(_YAML12_BOOL), list("tTfF"))
    base.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(_YAML12_INT), list("-+0123456789"))
    base.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(_YAML12_FLOAT), list("-+0123456789."))
    return base


@functools.lru_cache(maxsize=1)
def _config_loader() -> type:
    import yaml

    class ConfigLoader(yaml.SafeLoader):
        where: str = "the config"
        keys: list[str]

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise ConfigError(
                    f"{self.where} uses the YAML alias *{event.anchor} (line {event.start_mark.line + 1}). Expected "
                    "plain values: roverlite does not expand YAML aliases (a few nested aliases can expand to "
                    "gigabytes). Received: an alias."
                )
            return super().compose_node(parent, index)

        def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
            if not isinstance(node, yaml.MappingNode):
                return super().construct_mapping(node, deep=deep)
            mapping: dict[Any, Any] = {}
            lines: dict[Any, int] = {}
            for key_node, value_node in node.value:
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    seen = key in mapping
                except TypeError:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark, "found an unhashable key", key_node.start_mark
                    ) from None
                if seen:
                    raise ConfigError(
                        f"{self.where} sets {self._dotted(key)!r} twice (lines {lines[key]} and {line}). Expected "
                        "each key once. Received: a duplicate key."
                    )
                self.keys.append(str(key))
                try:
                    mapping[key] = self.construct_object(value_node, deep=True)
                finally:
                    self.keys.pop()
                lines[key] = line
            return mapping

        def construct_sequence(self, node: Any, deep: bool = False) -> list[Any]:
            return super().construct_sequence(node, deep=True)  # nested mappings know their key

        def construct_number(self, node: Any) -> Any:
            text = self.construct_scalar(node)
            if len(text) > MAX_NUMBER_CHARS:
                raise ConfigError(
                    f"Expected a number of at most {MAX_NUMBER_CHARS} characters for {self._dotted()} in "
                    f"{self.where}. Received: a number of {len(text)} characters."
                )
            if node.tag.endswith(":int"):
                if text.startswith(("0x", "0o")):
                    return int(text[2:], 16 if text[1] == "x" else 8)
                return int(text, 10)
            if text.lstrip("+-").lower() == ".inf":
                return -math.inf if text.startswith("-") else math.inf
            return math.nan if text.lower() == ".nan" else float(text)

        def _dotted(self, last: Any = None) -> str:
            parts = [*self.keys, *([] if last is None else [str(last)])]
            return ".".join(parts) or "the top level"

    _yaml12_resolvers(ConfigLoader)
    ConfigLoader.add_constructor("tag:yaml.org,2002:int", ConfigLoader.construct_number)
    ConfigLoader.add_constructor("tag:yaml.org,2002:float", ConfigLoader.construct_number)
    return ConfigLoader


@functools.lru_cache(maxsize=1)
def config_dumper() -> type:
    """A safe dumper that quotes every string the loader would read as something else."""
    import yaml

    class ConfigDumper(yaml.SafeDumper):
        pass

    return _yaml12_resolvers(ConfigDumper)
