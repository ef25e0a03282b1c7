"""A two-stage model's graph cut in two: stage 1 (``input`` -> ``denoised``) and stage 2 with the
2x tail (``denoised`` -> ``deconvolved``), each an ONNX model of its own.

Why: each stage reaches far less context than the two together (the shipped 2D network: 48 px
each, 96 for the whole; benchmarks/RESULTS.md, "Each stage's reach"), so restoring a frame
stage by stage (``runtime.staged``) computes far fewer redundant pixels than tiles that run
both stages on ``tile + 2 x halo``.

Why written here and not with the ``onnx`` package: the runtime install is kept small for
acquisition software (numpy, onnxruntime, tifffile), and ``onnx`` (with protobuf) is not in it.
Cutting a graph needs only protobuf's wire format at the level of whole fields: the ``ModelProto``
and ``GraphProto`` fields are split into records, each ``NodeProto`` is read only for its input
and output names, and every record that is kept (nodes, initializers, opsets, functions,
metadata) is copied byte for byte, never decoded or re-encoded. Anything this reader does not
expect (groups, subgraphs in attributes, sparse initializers, a stage that needs a tensor from
outside its cut) makes :func:`split_stages` return ``None``: the caller then runs the whole
model, as before. Field numbers are those of ``onnx.proto`` (stable since ONNX 1.0).
"""

from __future__ import annotations

import logging

from .metadata import INPUT_NAME, OUTPUT_NAMES

log = logging.getLogger(__name__)

# ModelProto
_GRAPH = 7
# GraphProto
_NODE, _GRAPH_NAME, _INITIALIZER, _INPUT, _OUTPUT, _SPARSE_INITIALIZER = 1, 2, 5, 11, 12, 15
# NodeProto
_NODE_INPUT, _NODE_OUTPUT, _NODE_ATTRIBUTE = 1, 2, 5
# AttributeProto: a graph (g) or graphs: a subgraph that may read outer tensors by name
_ATTR_GRAPH, _ATTR_GRAPHS = 6, 11
# TensorProto and ValueInfoProto: their name
_TENSOR_NAME, _VALUE_INFO_NAME = 8, 1
_LENGTH_DELIMITED = 2


class Uncuttable(ValueError):
    """The graph is not one this reader can cut (the caller runs the whole model)."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise Uncuttable("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _records(buf: bytes) -> list[tuple[int, int, bytes, bytes]]:
    """A message's fields in order: ``(number, wire type, payload, whole record)``; varint
    and fixed-size payloads are returned as their raw bytes."""
    fields, pos = [], 0
    while pos < len(buf):
        start = pos
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, end = _varint(buf, pos)
        elif wire == 1:
            end = pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            end = pos + size
        elif wire == 5:
            end = pos + 4
        else:
            raise Uncuttable(f"wire type {wire} (groups are not used by ONNX)")
        if end > len(buf) or number == 0:
            raise Uncuttable("truncated field")
        fields.append((number, wire, buf[pos:end], buf[start:end]))
        pos = end
    return fields


def _record(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | _LENGTH_DELIMITED) + _encode_varint(len(payload)) + payload


def _text(payload: bytes) -> str:
    return payload.decode("utf-8", errors="strict")


def _name(payload: bytes, number: int) -> str:
    names = [_text(p) for n, w, p, _ in _records(payload) if n == number and w == 2]
    return names[0] if names else ""


class _Node:
    """One ``NodeProto``: its record, kept as is, and its input and output names."""

    def __init__(self, record: bytes, payload: bytes):
        self.record = record
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        for number, wire, value, _ in _records(payload):
            if number == _NODE_INPUT and wire == 2:
                self.inputs.append(_text(value))
            elif number == _NODE_OUTPUT and wire == 2:
                self.outputs.append(_text(value))
            elif number == _NODE_ATTRIBUTE and wire == 2:
                if any(n in (_ATTR_GRAPH, _ATTR_GRAPHS) for n, _, _, _ in _records(value)):
                    raise Uncuttable("a node holds a subgraph")


def _cut(graph: list, source: str, target: str) -> bytes:
    """The ``GraphProto`` payload that computes ``target`` from ``source`` alone."""
    nodes = [_Node(rec, p) for n, w, p, rec in graph if n == _NODE and w == 2]
    initializers = {
        _name(p, _TENSOR_NAME): rec for n, w, p, rec in graph if n == _INITIALIZER and w == 2
    }
    values = {  # graph inputs and outputs by name: the new graph's input and output types
        (n, _name(p, _VALUE_INFO_NAME)): p for n, w, p, _ in graph if n in (_INPUT, _OUTPUT)
    }
    producer = {name: k for k, node in enumerate(nodes) for name in node.outputs if name}
    kept_nodes: set[int] = set()
    kept_initializers: set[str] = set()
    pending, seen = [target], set()
    while pending:
        name = pending.pop()
        if not name or name == source or name in seen:
            continue  # "" is an omitted optional input
        seen.add(name)
        if name in producer:
            k = producer[name]
            kept_nodes.add(k)
            pending.extend(nodes[k].inputs)
        elif name in initializers:
            kept_initializers.add(name)
        else:
            raise Uncuttable(f"{target!r} needs {name!r}, which {source!r} does not give")
    source_type = values.get((_INPUT, source), values.get((_OUTPUT, source)))
    target_type = values.get((_OUTPUT, target))
    if source_type is None or target_type is None:
        raise Uncuttable(f"{source!r} or {target!r} is not a graph input or output")
    parts = [rec for n, w, p, rec in graph if n == _GRAPH_NAME]
    parts += [nodes[k].record for k in sorted(kept_nodes)]  # the original (topological) order
    parts += [initializers[name] for name in initializers if name in kept_initializers]
    parts += [_record(_INPUT, source_type), _record(_OUTPUT, target_type)]
    return b"".join(parts)


def split_stages(model_bytes: bytes) -> tuple[bytes, bytes] | None:
    """Cut a zsdeconvnet model into stage 1 and stage 2 (+ tail) ONNX models.

    Parameters
    ----------
    model_bytes : bytes
        The whole ``.onnx`` file.

    Returns
    -------
    (bytes, bytes) or None
        Stage 1 (``input`` -> ``denoised``) and stage 2 (``denoised`` -> ``deconvolved``), or
        ``None`` when the graph cannot be cut (the reason is logged at debug level).
    """
    denoised, deconvolved = OUTPUT_NAMES
    try:
        model = _records(model_bytes)
        graphs = [p for n, w, p, _ in model if n == _GRAPH and w == 2]
        if len(graphs) != 1:
            raise Uncuttable("no single graph")
        graph = _records(graphs[0])
        if any(n == _SPARSE_INITIALIZER for n, _, _, _ in graph):
            raise Uncuttable("sparse initializers")
        stages = []
        for source, target in ((INPUT_NAME, denoised), (denoised, deconvolved)):
            cut = _record(_GRAPH, _cut(graph, source, target))
            stages.append(b"".join(cut if n == _GRAPH else rec for n, _, _, rec in model))
    except (Uncuttable, UnicodeDecodeError) as err:
        log.debug("the model's graph is not cut into stages: %s", err)
        return None
    return stages[0], stages[1]
