"""Cheaper MQTT 5 property objects for paho-mqtt 2.x, the client under aiomqtt on both sides.

paho builds every ``Properties`` object from nothing: two dictionaries of 27 entries and some
thirty list searches in ``__init__``, then ``unpack`` begins with ``clear()``, which tries all 27
names with ``hasattr``. It does that for every PUBLISH and PUBACK it reads, about 50 µs each
(measured 2026-11-23) even when the packet carries no property at all, which is ours. The
server reads about three such packets per chunk (the entry's copy, a status, the receipt's
PUBACK) and so does each device: a few per cent of the fleet benchmark on either side.

:func:`install` replaces three methods: ``__init__`` shares the tables, built once by paho's own
constructor and only ever read afterwards (paho never writes to them); ``clear`` and ``isEmpty``
look at the properties the object actually holds instead of trying every name. Everything else
(validation when a property is set, packing, unpacking) stays paho's. It patches only the 2.x
line it was written against, and tests/unit/custody/test_mqtt_speedups.py checks the patched
class against the original on packed and unpacked properties.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

_installed = False
#: paho's own methods, kept by the first :func:`install` (for :func:`uninstall`).
_originals: dict[str, Any] = {}


def install() -> bool:
    """Patch paho's ``Properties`` once per process; whether it is patched (False for an unknown paho)."""
    global _installed
    if _installed:
        return True
    import paho.mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    if not str(getattr(paho.mqtt, "__version__", "")).startswith("2."):
        log.debug("paho-mqtt %s: Properties left as they are", getattr(paho.mqtt, "__version__", "?"))
        return False
    cls: Any = Properties  # paho ships no annotations for it
    template = cls(PacketTypes.PUBLISH)  # paho's own constructor, once
    types, names, table = template.types, template.names, template.properties
    compressed = frozenset(name.replace(" ", "") for name in names)

    def __init__(self: Any, packetType: int) -> None:
        object.__setattr__(self, "packetType", packetType)
        object.__setattr__(self, "types", types)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "properties", table)

    def clear(self: Any) -> None:
        for name in [n for n in vars(self) if n in compressed]:
            object.__delattr__(self, name)

    def isEmpty(self: Any) -> bool:
        return not any(n in compressed for n in vars(self))

    _originals.update({name: cls.__dict__[name] for name in ("__init__", "clear", "isEmpty")})
    cls.__init__ = __init__
    cls.clear = clear
    cls.isEmpty = isEmpty
    _installed = True
    return True


def uninstall() -> None:
    """Put paho's own methods back (the tests compare the two)."""
    global _installed
    from paho.mqtt.properties import Properties

    cls: Any = Properties
    for name, method in _originals.items():
        setattr(cls, name, method)
    _installed = False
