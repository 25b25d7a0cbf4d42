"""PyTorch side of hwgen: multiplication-free layers (adder, shift, Winograd-adder), model architectures, training, checkpoints."""

from .adder import AdderConv2d, AdderFunction, AdderLinear, adder_l1
from .checkpoint import CheckpointError, embedded_checkpoint, load_checkpoint, save_checkpoint
from . import ops  # registers the hwgen:: operators (torch.export, .pt2 files)
from .models import archs, build_model, default_config, register_arch
from .shift import ShiftConv2d, ShiftLinear
from .winograd import WinogradAdderConv2d

__all__ = ["AdderConv2d", "AdderFunction", "AdderLinear", "adder_l1", "CheckpointError",
           "embedded_checkpoint", "load_checkpoint", "save_checkpoint", "archs", "build_model",
           "default_config", "register_arch", "ShiftConv2d", "ShiftLinear", "WinogradAdderConv2d"]
