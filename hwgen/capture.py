"""Capture: a PyTorch model, as written, → the ordered nodes the quantizer reads.

A model reaches :mod:`hwgen.quant` as a list of :class:`Node` in execution order, each a leaf
module (an hwgen layer, ``nn.Conv2d``, ``nn.Linear``, a BatchNorm, a pool, ``nn.ReLU``,
``nn.Flatten``, or :class:`Add` for a residual ``x + y``) that names the tensors it reads.  Three
front ends give that list:

* :func:`capture` of a live ``nn.Module``, by :func:`torch.fx.symbolic_trace` with a tracer that
  keeps hwgen's layers and the ``torch.nn`` modules as leaves, so a ``forward()`` is read as
  written: ``F.relu`` / ``torch.relu`` / ``x.relu()`` become ``nn.ReLU``, ``F.max_pool2d``
  ``nn.MaxPool2d``, ``torch.flatten(x, 1)`` / ``x.view(x.size(0), -1)`` /
  ``x.reshape(x.shape[0], -1)`` ``nn.Flatten``, ``x + y`` an :class:`Add`; ``nn.Identity``,
  ``nn.Dropout`` and ``F.dropout`` are dropped.  An ``nn.Sequential`` is the simplest case: its
  leaves in order, named by their module path as before.
* :func:`capture_exported` of a :class:`torch.export.ExportedProgram` (a ``.pt2`` file, read
  by :func:`load_exported`): the ATen operators and the ``hwgen::`` operators of
  :mod:`hwgen.nn.ops` are mapped to the same modules, rebuilt from the program's state dict.
  Loading a ``.pt2`` runs no code of the file: :func:`torch.export.load` reads a graph of
  operators and tensors, and only these operators are then run, by hwgen's own modules.
* :func:`load_function` of ``path.py:function``: imports that file (which runs its code — that
  is what a Python file is for) and calls the function, which must return an ``nn.Module``.

A function or operator outside these is refused here, before anything is written, by an
:class:`UnsupportedOpError` naming the operator, its node and the supported ones.
"""

from __future__ import annotations

import importlib.util
import operator
import os
import sys
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import fx, nn

from . import ir
from .nn.adder import AdderConv2d, AdderLinear
from .nn.shift import ShiftConv2d, ShiftLinear
from .nn.winograd import WinogradAdderConv2d

__all__ = ["Node", "Add", "Captured", "UnsupportedOpError", "CaptureError", "capture",
           "capture_exported", "load_exported", "load_function", "load_module", "is_module_source", "INPUT",
           "SUPPORTED"]

#: The name of the model's input tensor in :attr:`Node.inputs`.
INPUT = "input"

#: What a model may be written with, for the messages.
SUPPORTED = ("hwgen.nn layers, nn.Conv2d, nn.Linear, nn.BatchNorm1d/2d, nn.ReLU / F.relu / "
             "torch.relu, nn.MaxPool2d / F.max_pool2d, nn.Flatten / torch.flatten(x, 1) / "
             "x.view(x.size(0), -1), x + y, nn.Identity, nn.Dropout")

_HWGEN_LAYERS = (AdderConv2d, AdderLinear, ShiftConv2d, ShiftLinear, WinogradAdderConv2d)


class UnsupportedOpError(ir.ModelError):
    """A function, method or operator of the model that hwgen cannot capture (one line)."""


class CaptureError(ir.ModelError):
    """A model, file or function that cannot be read as a model (one line)."""


@dataclass(frozen=True)
class Node:
    """One captured operation: ``module(*inputs)``.

    Members
    -------
    name : str
        The module path (``"features.0"``) or the graph's node name (``"relu_1"``).
    module : nn.Module
        A leaf module; a functional operation is given as its module equivalent.
    inputs : tuple of str
        The names of the nodes it reads (:data:`INPUT` for the model's input).
    """

    name: str
    module: nn.Module
    inputs: tuple[str, ...]


class Add(nn.Module):
    """A residual addition ``x + y`` of two captured tensors."""

    def forward(self, x, y):
        return x + y


class Captured(nn.Module):
    """Captured nodes as a module: runs ``nodes`` in order (the float model of a ``.pt2``).

    :func:`capture` of a ``Captured`` gives its nodes back unchanged.
    """

    def __init__(self, nodes: list[Node], output: str):
        super().__init__()
        self.nodes = list(nodes)
        self.output = output
        # Registered under safe names, so that .eval() and .parameters() reach them.
        self.layers = nn.ModuleDict(OrderedDict((n.name.replace(".", "_"), n.module)
                                                for n in nodes))

    def forward(self, x):
        env = {INPUT: x}
        for n in self.nodes:
            env[n.name] = n.module(*(env[i] for i in n.inputs))
        return env[self.output]


# --------------------------------------------------------------------------- torch.fx


class _Tracer(fx.Tracer):
    """Keeps hwgen's layers (and, as fx does, the ``torch.nn`` modules) as single nodes."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, _HWGEN_LAYERS) or super().is_leaf_module(m, qualname)


_RELU = {F.relu, torch.relu, torch.relu_}
_DROPOUT = {F.dropout, torch.dropout, F.dropout1d, F.dropout2d, F.alpha_dropout}
_ADD = {operator.add, operator.iadd, torch.add}
_FLATTEN = {torch.flatten}
_ADD_METHODS = ("add", "add_")  # tensor methods (torch names, not hwgen layer kinds)
_FLATTEN_METHODS = frozenset({"flatten"})  # Tensor.flatten
_ADD_METHODS = frozenset({"add", "add_"})  # Tensor.add, Tensor.add_
_RESHAPE = {torch.reshape}
_MAXPOOL = {F.max_pool2d, torch.max_pool2d}
_MAXPOOL_ARGS = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")


def _describe(node: fx.Node) -> str:
    """How the operation is written: ``F.relu``, ``x.sigmoid()``, ``torch.cat``."""
    t = node.target
    if node.op == "call_method":
        return f"x.{t}()"
    if node.op == "get_attr":
        return f"the attribute {t!r} (a tensor used directly)"
    mod = getattr(t, "__module__", None) or ""
    name = getattr(t, "__name__", str(t))
    if mod.startswith("torch.nn.functional"):
        return f"F.{name}"
    if mod.startswith("torch") or mod == "" and hasattr(torch, name):
        return f"torch.{name}"
    if mod in ("_operator", "operator"):
        return f"operator.{name}"
    return f"{mod}.{name}" if mod else name


def _refuse(what: str, where: str, why: str = "") -> None:
    raise UnsupportedOpError(f"capture: {what} at node {where!r} is not supported{why} "
                             f"(supported: {SUPPORTED})")


def capture(model: nn.Module) -> list[Node]:
    """The nodes of ``model`` in execution order (see the module docstring).

    Raises :class:`UnsupportedOpError` for an operation outside :data:`SUPPORTED` and
    :class:`CaptureError` for a ``forward`` that torch.fx cannot trace (data-dependent control
    flow: save the model with torch.export instead).
    """
    if isinstance(model, Captured):
        return list(model.nodes)
    if not isinstance(model, nn.Module):
        raise CaptureError(f"capture: a model must be a torch.nn.Module, not "
                           f"{type(model).__name__}")
    if isinstance(model, (*_HWGEN_LAYERS, nn.Conv2d, nn.Linear)):
        return [Node(type(model).__name__, model, (INPUT,))]
    tracer = _Tracer()
    try:
        graph = tracer.trace(model)
    except Exception as e:  # noqa: BLE001 -- fx raises many types; all mean "cannot be traced"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CaptureError(f"capture: torch.fx cannot trace {type(model).__name__}.forward "
                           f"({type(e).__name__}: {first}); write forward without data-dependent "
                           f"control flow, or save the model with torch.export") from None
    graph = fx.GraphModule(tracer.root, graph).graph  # owned: dead-code elimination needs it
    graph.eliminate_dead_code()
    return _FxReader(model).read(graph)


class _FxReader:
    def __init__(self, root: nn.Module):
        self.root = root
        self.nodes: list[Node] = []
        self.alias: dict[str, str] = {}    # a tensor node → the captured tensor it equals
        self.shape: dict[str, tuple] = {}  # a shape node → ("size", tensor) or ("dim0", tensor)

    def read(self, graph: fx.Graph) -> list[Node]:
        inputs = [n for n in graph.nodes if n.op == "placeholder"]
        if len(inputs) != 1:
            raise CaptureError(f"capture: forward must take one tensor, not {len(inputs)} "
                               f"arguments")
        self.alias[inputs[0].name] = INPUT
        for node in graph.nodes:
            if node.op == "placeholder":
                continue
            if node.op == "output":
                out = node.args[0]
                if not isinstance(out, fx.Node) or out.name not in self.alias:
                    raise CaptureError("capture: forward must return one tensor")
                output = self.alias[out.name]
                break
            self._read(node)
        if not self.nodes or output == INPUT:
            raise CaptureError("capture: the model returns its input unchanged")
        used = _used(self.nodes, output)
        return [n for n in self.nodes if n.name in used]

    def _tensor(self, arg, node: fx.Node) -> str:
        if isinstance(arg, fx.Node) and arg.name in self.alias:
            return self.alias[arg.name]
        _refuse(_describe(node) + " with an argument that is not a captured tensor", node.name)

    def _emit(self, node: fx.Node, name: str, module: nn.Module, *args) -> None:
        self.nodes.append(Node(name, module, tuple(self._tensor(a, node) for a in args)))
        self.alias[node.name] = name

    def _read(self, node: fx.Node) -> None:
        op, t, args, kwargs = node.op, node.target, node.args, node.kwargs
        if op == "call_module":
            m = self.root.get_submodule(t)
            if isinstance(m, (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d)):
                self.alias[node.name] = self._tensor(args[0], node)
                return
            if len(args) != 1 or kwargs:
                _refuse(f"module {type(m).__name__} called with {len(args) + len(kwargs)} "
                        f"arguments", t)
            self._emit(node, t, m, args[0])
            return
        if op == "get_attr":
            _refuse(_describe(node), node.name, ": use the layer's module (nn.Conv2d, an hwgen "
                                               "layer) rather than its tensor")
        fn = t if op == "call_function" else None
        method = t if op == "call_method" else None
        if fn in _RELU or method in ("relu", "relu_"):
            self._emit(node, node.name, nn.ReLU(), args[0])
        elif fn in _DROPOUT or method in ("contiguous", "clone"):
            self.alias[node.name] = self._tensor(args[0], node)
        elif fn in _ADD or method in _ADD_METHODS:
            if len(args) != 2 or kwargs:
                _refuse(_describe(node) + " with a scale (alpha)", node.name)
            self._emit(node, node.name, Add(), *args)
        elif fn in _MAXPOOL:
            params = dict(zip(_MAXPOOL_ARGS, args[1:]), **kwargs)
            if params.pop("return_indices", False):
                _refuse(_describe(node) + " with return_indices", node.name)
            self._emit(node, node.name, nn.MaxPool2d(**params), args[0])
        elif fn in _FLATTEN or method in _FLATTEN_METHODS:
            params = dict(zip(("start_dim", "end_dim"), args[1:]), **kwargs)
            self._emit(node, node.name, nn.Flatten(params.get("start_dim", 0),
                                                   params.get("end_dim", -1)), args[0])
        elif method == "size" or (fn is getattr and args[1:] == ("shape",)):
            dim = args[1] if method == "size" and len(args) > 1 else kwargs.get("dim")
            self.shape[node.name] = ("dim0", args[0]) if dim == 0 else ("size", args[0])
        elif fn is operator.getitem and isinstance(args[0], fx.Node) and args[0].name in self.shape:
            kind, of = self.shape[args[0].name]
            if kind != "size" or args[1] != 0:
                _refuse("an indexed shape other than x.shape[0]", node.name)
            self.shape[node.name] = ("dim0", of)
        elif fn in _RESHAPE or method in ("view", "reshape"):
            self._reshape(node)
        else:
            _refuse(_describe(node), node.name)

    def _reshape(self, node: fx.Node) -> None:
        """``x.view(x.size(0), -1)`` and its spellings: a flatten from dimension 1."""
        x, *dims = node.args
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = list(dims[0])
        ok = (len(dims) == 2 and dims[1] == -1 and isinstance(dims[0], fx.Node)
              and self.shape.get(dims[0].name, ("", None))[0] == "dim0"
              and self.shape[dims[0].name][1] is x)
        if not ok:
            _refuse(f"{_describe(node)} to a shape other than (x.size(0), -1)", node.name,
                    ": flatten with torch.flatten(x, 1) or x.view(x.size(0), -1)")
        self._emit(node, node.name, nn.Flatten(), x)


# --------------------------------------------------------------------------- torch.export

_ATEN = torch.ops.aten


def _load_state(module: nn.Module, tensors: dict[str, torch.Tensor]) -> nn.Module:
    with torch.no_grad():
        for key, value in tensors.items():
            target = module.get_parameter(key) if key in dict(module.named_parameters()) \
                else module.get_buffer(key)
            target.copy_(value.detach())
    return module.eval()


def _weights(w, b) -> dict:
    return {"weight": w} if b is None else {"weight": w, "bias": b}


def _pair(v) -> tuple[int, int]:
    v = list(v) if isinstance(v, (list, tuple)) else [v]
    return (int(v[0]), int(v[-1])) if v else (1, 1)


class _ExportReader:
    """Maps the nodes of an exported program to modules (see :func:`capture_exported`)."""

    def __init__(self, ep):
        self.ep = ep
        sig = ep.graph_signature
        state = dict(ep.state_dict)
        state.update(getattr(ep, "constants", {}) or {})
        self.consts = {}
        for name, fqn in {**sig.inputs_to_parameters, **sig.inputs_to_buffers,
                          **getattr(sig, "inputs_to_lifted_tensor_constants", {})}.items():
            self.consts[name] = state[fqn]
        self.user_inputs = list(sig.user_inputs)
        self.nodes: list[Node] = []
        self.alias: dict[str, str] = {}

    def const(self, arg, node) -> torch.Tensor | None:
        if arg is None:
            return None
        if isinstance(arg, fx.Node) and arg.name in self.consts:
            return self.consts[arg.name]
        _refuse(f"{node.target} with a computed weight", node.name)

    def tensor(self, arg, node) -> str:
        if isinstance(arg, fx.Node) and arg.name in self.alias:
            return self.alias[arg.name]
        _refuse(f"{node.target} with an argument that is not a captured tensor", node.name)

    def emit(self, node, module, *args) -> None:
        self.nodes.append(Node(node.name, module.eval(), tuple(self.tensor(a, node) for a in args)))
        self.alias[node.name] = node.name

    def read(self) -> Captured:
        if len(self.user_inputs) != 1:
            raise CaptureError(f"capture: the exported program takes {len(self.user_inputs)} "
                               f"inputs, not one image tensor")
        self.alias[self.user_inputs[0]] = INPUT
        output = None
        for node in self.ep.graph.nodes:
            if node.op == "placeholder":
                continue
            if node.op == "output":
                outs = node.args[0]
                outs = outs if isinstance(outs, (tuple, list)) else [outs]
                if (len(outs) != 1 or not isinstance(outs[0], fx.Node)
                        or outs[0].name not in self.alias):
                    raise CaptureError("capture: the exported program must return one tensor")
                output = self.alias[outs[0].name]
                break
            if node.op != "call_function":
                _refuse(f"a {node.op} node", node.name)
            self.map(node)
        if output is None or output == INPUT:
            raise CaptureError("capture: the exported program computes nothing")
        used = _used(self.nodes, output)
        return Captured([n for n in self.nodes if n.name in used], output)

    def map(self, node) -> None:  # noqa: C901 -- one branch per operator
        t, a = node.target, list(node.args)
        ops = torch.ops.hwgen
        if t in (ops.adder_conv2d.default,):
            x, w, stride, padding, eta = a
            w = self.const(w, node)
            m = AdderConv2d(w.shape[1], w.shape[0], w.shape[2], stride=stride, padding=padding,
                            eta=eta)
            self.emit(node, _load_state(m, {"weight": w}), x)
        elif t == ops.adder_linear.default:
            x, w, eta = a
            w = self.const(w, node)
            m = AdderLinear(w.shape[1], w.shape[0], eta=eta)
            self.emit(node, _load_state(m, {"weight": w}), x)
        elif t in (ops.shift_conv2d.default, ops.shift_linear.default):
            x, params, mode, pmin, pmax, *geometry = a
            params = [self.const(p, node) for p in params]
            w = params[0]
            if t == ops.shift_conv2d.default:
                m = ShiftConv2d(w.shape[1], w.shape[0], w.shape[2], stride=geometry[0],
                                padding=geometry[1], mode=mode, prange=(pmin, pmax))
            else:
                m = ShiftLinear(w.shape[1], w.shape[0], mode=mode, prange=(pmin, pmax))
            names = ["weight"] if mode == "q" else ["shift", "sign"]
            self.emit(node, _load_state(m, dict(zip(names, params))), x)
        elif t == ops.winograd_adder_conv2d.default:
            x, w, bt, g, at, padding, p, eta = a
            w = self.const(w, node)
            m = WinogradAdderConv2d(w.shape[1], w.shape[0], padding=padding, eta=eta)
            m.p = float(p)
            tensors = {"weight": w, "bt": self.const(bt, node), "g": self.const(g, node),
                       "at": self.const(at, node)}
            self.emit(node, _load_state(m, tensors), x)
        elif t in (_ATEN.conv2d.default, _ATEN.convolution.default):
            self._conv(node, a)
        elif t == _ATEN.linear.default:
            x, w, b = (a + [None])[:3]
            w, b = self.const(w, node), self.const(b, node)
            m = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
            self.emit(node, _load_state(m, _weights(w, b)), x)
        elif t in (_ATEN.batch_norm.default, _ATEN._native_batch_norm_legit_no_training.default):
            self._batch_norm(node, a)
        elif t in (_ATEN.relu.default, _ATEN.relu_.default):
            self.emit(node, nn.ReLU(), a[0])
        elif t in (_ATEN.max_pool2d.default, _ATEN.max_pool2d_with_indices.default):
            x, k, *rest = a
            stride, padding, dilation, ceil = (rest + [[], 0, 1, False][len(rest):])[:4]
            self.emit(node, nn.MaxPool2d(list(k), list(stride) or None, _pair(padding),
                                         _pair(dilation), bool(ceil)), x)
        elif t == _ATEN.flatten.using_ints:
            x, start, end = (a + [0, -1][len(a) - 1:])[:3]
            self.emit(node, nn.Flatten(int(start), int(end)), x)
        elif t in (_ATEN.view.default, _ATEN.reshape.default, _ATEN._unsafe_view.default):
            x = a[0]
            before, after = x.meta["val"].shape, node.meta["val"].shape
            if len(after) != 2 or after[0] != before[0]:
                _refuse(f"{t} from {tuple(before)} to {tuple(after)}", node.name,
                        ": only a flatten from dimension 1")
            self.emit(node, nn.Flatten(), x)
        elif t in (_ATEN.add.Tensor, _ATEN.add_.Tensor):
            if len(a) != 2 or node.kwargs.get("alpha", 1) != 1:
                _refuse(f"{t} with a scale (alpha)", node.name)
            self.emit(node, Add(), *a)
        elif t in (_ATEN.dropout.default, _ATEN.clone.default, _ATEN.contiguous.default,
                   _ATEN.alias.default, _ATEN.detach.default):
            self.alias[node.name] = self.tensor(a[0], node)
        elif t is operator.getitem:
            src = a[0]
            if not (isinstance(src, fx.Node) and src.name in self.alias and a[1] == 0):
                _refuse(f"element {a[1]} of {getattr(src, 'target', src)}", node.name)
            self.alias[node.name] = self.alias[src.name]
        else:
            _refuse(str(t), node.name)

    def _conv(self, node, a) -> None:
        if node.target == _ATEN.convolution.default:
            x, w, b, stride, padding, dilation, transposed, _, groups = a
            if transposed:
                _refuse("a transposed convolution", node.name)
        else:
            defaults = [None, [1], [0], [1], 1]  # bias, stride, padding, dilation, groups
            x, w, b, stride, padding, dilation, groups = (a + defaults[len(a) - 2:])[:7]
        w, b = self.const(w, node), self.const(b, node)
        if isinstance(padding, str):
            _refuse(f"{node.target} with padding={padding!r}", node.name,
                    ": give the padding in pixels")
        m = nn.Conv2d(w.shape[1] * int(groups), w.shape[0], tuple(w.shape[2:]),
                      stride=_pair(stride), padding=_pair(padding), dilation=_pair(dilation), groups=int(groups),
                      bias=b is not None)
        self.emit(node, _load_state(m, _weights(w, b)), x)

    def _batch_norm(self, node, a) -> None:
        if node.target == _ATEN.batch_norm.default:
            x, w, b, mean, var, training, _, eps, _ = a
            if training:
                _refuse("a BatchNorm in training mode", node.name,
                        ": export the model in eval mode")
        else:
            x, w, b, mean, var, _, eps = a
        w, b, mean, var = (self.const(v, node) for v in (w, b, mean, var))
        if mean is None or var is None:
            _refuse("a BatchNorm without running statistics", node.name)
        rank = len(x.meta["val"].shape)
        cls = {2: nn.BatchNorm1d, 4: nn.BatchNorm2d}.get(rank)
        if cls is None:
            _refuse(f"a BatchNorm of a {rank}-D tensor", node.name)
        m = cls(len(mean), eps=float(eps), affine=w is not None)
        tensors = {"running_mean": mean, "running_var": var}
        if w is not None:
            tensors.update(weight=w, bias=b if b is not None else torch.zeros_like(w))
        self.emit(node, _load_state(m, tensors), x)


def _used(nodes: list[Node], output: str) -> set[str]:
    """The names of the nodes that ``output`` depends on."""
    by_name = {n.name: n for n in nodes}
    used, todo = set(), [output]
    while todo:
        name = todo.pop()
        if name in used or name not in by_name:
            continue
        used.add(name)
        todo.extend(by_name[name].inputs)
    return used


def capture_exported(ep) -> Captured:
    """The nodes of an exported program, as a :class:`Captured` module (its float model)."""
    return _ExportReader(ep).read()


# --------------------------------------------------------------------------- model files


def load_exported(path: str | os.PathLike) -> Captured:
    """Read a ``.pt2`` file written by :func:`torch.export.save`; runs no code from the file."""
    path = Path(path)
    if not path.is_file():
        raise CaptureError(f"{path}: no such exported model file")
    try:
        ep = torch.export.load(path)
    except Exception as e:  # noqa: BLE001 -- a damaged or foreign file, whatever the reader says
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CaptureError(f"{path}: not a readable torch.export program ({type(e).__name__}: "
                           f"{first})") from None
    return capture_exported(ep)


def is_module_source(source: str | os.PathLike) -> bool:
    """Whether ``source`` names a ``.pt2`` file or a ``path.py:function``."""
    text = str(source)
    return text.endswith(".pt2") or _split_function(text) is not None


def _split_function(text: str) -> tuple[str, str] | None:
    path, colon, func = text.rpartition(":")
    if colon and path.endswith(".py") and func.isidentifier():
        return path, func
    return None


def load_function(spec: str) -> nn.Module:
    """``path.py:function``: import the file (running its code) and return ``function()``."""
    parts = _split_function(str(spec))
    if parts is None:
        raise CaptureError(f"{spec!r}: expected path.py:function")
    path, func = Path(parts[0]), parts[1]
    if not path.is_file():
        raise CaptureError(f"{path}: no such Python file")
    name = f"hwgen_user_{abs(hash(str(path.resolve())))}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # for dataclasses and pickling inside the file
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 -- the user's file; its error is theirs, in one line
        sys.modules.pop(name, None)
        raise CaptureError(f"{path}: importing it failed ({type(e).__name__}: {e})") from None
    fn = getattr(module, func, None)
    if not callable(fn):
        raise CaptureError(f"{path}: no function {func!r}")
    try:
        model = fn()
    except Exception as e:  # noqa: BLE001
        raise CaptureError(f"{path}:{func}() failed ({type(e).__name__}: {e})") from None
    if not isinstance(model, nn.Module):
        raise CaptureError(f"{path}:{func}() returned {type(model).__name__}, not a "
                           f"torch.nn.Module")
    return model.eval()


def load_module(source: str | os.PathLike) -> tuple[nn.Module, str]:
    """A ``.pt2`` file or a ``path.py:function`` → ``(module in eval mode, a short name)``."""
    text = str(source)
    if text.endswith(".pt2"):
        return load_exported(text), Path(text).stem
    parts = _split_function(text)
    if parts is None:
        raise CaptureError(f"{text!r}: expected a .pt2 file or path.py:function")
    return load_function(text), parts[1]
