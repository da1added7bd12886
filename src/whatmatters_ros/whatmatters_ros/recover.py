"""Recovering a bag whose writer was killed (no ``metadata.yaml``, no MCAP summary or footer).

The rosbags MCAP writer appends complete chunks (~1 MiB each; the first holds
the schemas and channels) and writes the index, footer and ``metadata.yaml``
only on close. After a SIGKILL the file ends inside or after the last chunk.
:func:`recover_bag` scans the complete chunks and writes their messages into a
new, closed bag (what ``ros2 bag reindex`` does for rosbag2), readable by
:func:`whatmatters.data.bags.read_episode`. No ROS import.
"""

from __future__ import annotations

import logging
import struct
import zlib
from pathlib import Path

from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.rosbag2.storage_mcap import decompress

from whatmatters.data.bags import COMMANDS, JOINT_STATES, TYPESTORE, BagError

__all__ = ["complete_chunk_count", "recover_bag"]

log = logging.getLogger(__name__)

MAGIC = b"\x89MCAP0\r\n"


def _string(buf: bytes, pos: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<I", buf, pos)
    return buf[pos + 4 : pos + 4 + n].decode(), pos + 4 + n


def _chunk_records(data: bytes) -> tuple[list[tuple[int, bytes]], int]:
    """``(opcode, body)`` of every record inside the complete chunks of an MCAP file's bytes, and their number."""
    if not data.startswith(MAGIC):
        raise BagError("not an MCAP file (bad magic)")
    pos, out, chunks = len(MAGIC), [], 0
    while pos + 9 <= len(data):
        op = data[pos]
        (length,) = struct.unpack_from("<Q", data, pos + 1)
        body = data[pos + 9 : pos + 9 + length]
        if len(body) < length:
            break  # the record the writer was killed in
        pos += 9 + length
        if op != 0x06:
            continue
        _, _, size, crc = struct.unpack_from("<QQQI", body, 0)
        compression, p = _string(body, 28)
        (csize,) = struct.unpack_from("<Q", body, p)
        try:
            inner = decompress(body[p + 8 : p + 8 + csize], compression, size, 0)
        except Exception as exc:  # noqa: BLE001 - a damaged chunk ends the recovery
            log.warning("chunk at byte %d cannot be decompressed (%s); stopping there", pos, exc)
            break
        if crc and zlib.crc32(inner) != crc:
            log.warning("chunk at byte %d fails its CRC; stopping there", pos)
            break
        q = 0
        while q + 9 <= len(inner):
            iop = inner[q]
            (ilen,) = struct.unpack_from("<Q", inner, q + 1)
            out.append((iop, inner[q + 9 : q + 9 + ilen]))
            q += 9 + ilen
        chunks += 1
    return out, chunks


def complete_chunk_count(mcap_file: str | Path) -> int:
    """Number of complete, intact chunks in an MCAP file, as :func:`recover_bag` would read them.

    Args:
        mcap_file: An MCAP file that may still be being written, or whose writer was killed.

    Returns:
        How many chunks are complete on disk now (0 for a missing or unreadable file).
    """
    try:
        return _chunk_records(Path(mcap_file).read_bytes())[1]
    except (OSError, BagError, struct.error):
        return 0


def _whole_steps(messages: list[tuple[int, int, bytes]], channels: dict[int, tuple[str, str]]) -> list[tuple[int, int, bytes]]:
    """Drops what follows the last command, except the first joint state after it."""
    cmd_ids = {cid for cid, (topic, _) in channels.items() if topic == COMMANDS}
    state_ids = {cid for cid, (topic, _) in channels.items() if topic == JOINT_STATES}
    cmd_times = [t for cid, t, _ in messages if cid in cmd_ids]
    if not cmd_times:
        return messages
    last = max(cmd_times)
    after = [t for cid, t, _ in messages if cid in state_ids and t > last]
    end = min(after) if after else last
    kept = [m for m in messages if m[1] <= last or (m[0] in state_ids and m[1] == end)]
    if len(kept) < len(messages):
        log.info("dropped %d messages of the control step cut by the kill", len(messages) - len(kept))
    return kept


def recover_bag(src: str | Path, dst: str | Path) -> int:
    """Writes the messages of the complete chunks of a damaged bag into a new bag.

    The control step the writer was in when it was killed is usually cut by
    the chunk boundary (its state recorded, its command not), so the
    recovered bag ends with the last command and the joint state after it:
    a consistent episode for :func:`whatmatters.data.bags.read_episode`.

    Args:
        src: The damaged bag folder (holding one ``*.mcap``).
        dst: The new bag folder (must not exist).

    Returns:
        The number of messages recovered.

    Raises:
        BagError: Naming the bag, if it has no MCAP file or no complete chunk.
    """
    src, dst = Path(src), Path(dst)
    files = sorted(src.glob("*.mcap"))
    if not files:
        raise BagError(f"bag {src}: no .mcap file")
    try:
        records, _ = _chunk_records(files[0].read_bytes())
    except (BagError, struct.error) as exc:
        raise BagError(f"bag {src}: {exc}") from exc
    schemas: dict[int, str] = {}
    channels: dict[int, tuple[str, str]] = {}
    messages: list[tuple[int, int, bytes]] = []
    for op, body in records:
        if op == 0x03:  # schema: id, name, encoding, data
            (sid,) = struct.unpack_from("<H", body, 0)
            schemas[sid], _ = _string(body, 2)
        elif op == 0x04:  # channel: id, schema id, topic, ...
            cid, sid = struct.unpack_from("<HH", body, 0)
            topic, _ = _string(body, 4)
            channels[cid] = (topic, schemas.get(sid, ""))
        elif op == 0x05:  # message: channel, sequence, log time, publish time, data
            cid, _, log_time, _ = struct.unpack_from("<HIQQ", body, 0)
            messages.append((cid, log_time, body[22:]))
    if not channels:
        raise BagError(f"bag {src}: no complete chunk to recover")
    messages = _whole_steps(messages, channels)
    with Writer(dst, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {cid: writer.add_connection(topic, msgtype, typestore=TYPESTORE) for cid, (topic, msgtype) in channels.items()}
        for cid, log_time, raw in messages:
            writer.write(conns[cid], log_time, raw)
    log.info("recovered %d messages of %s into %s", len(messages), src, dst)
    return len(messages)
