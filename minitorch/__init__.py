"""minitorch: a small tensor library with autodiff, written layer by layer (see README.md).

The names below are the public API of the MiniTorch course (minitorch.github.io), so the
course's own tests run against this package. Two course quirks are kept on purpose:
``minitorch.datasets`` is the dictionary of data-set constructors (not the submodule), and
``minitorch.max`` is the tensor max from ``nn`` (``operators.max`` is the float one).
"""

from . import cuda_ops, fast_ops, operators
from .autodiff import Context, Variable, backpropagate, central_difference, topological_sort
from .cuda_ops import CudaOps, mm_practice, sum_practice
from .datasets import datasets
from .fast_conv import Conv1dFun, Conv2dFun, conv1d, conv2d
from .fast_ops import FastOps
from .layers import Conv1d, Conv2d, Linear
from .module import Module, Parameter
from .nn import Max, argmax, avgpool2d, dropout, logsoftmax, max, maxpool2d, softmax, tile
from .optim import SGD, Optimizer
from .scalar import Scalar, ScalarHistory, derivative_check
from .scalar_functions import ScalarFunction
from .tensor import History, Tensor
from .tensor_data import (
    MAX_DIMS,
    Index,
    IndexingError,
    OutIndex,
    Shape,
    Storage,
    Strides,
    TensorData,
    UserIndex,
    UserShape,
    UserStrides,
    broadcast_index,
    index_to_position,
    shape_broadcast,
    strides_from_shape,
    to_index,
)
from .tensor_functions import Function, _tensor, grad_central_difference, grad_check, rand, tensor, zeros
from .tensor_ops import SimpleBackend, SimpleOps, TensorBackend, TensorOps
from .testing import MathTest, MathTestVariable

prod = operators.prod

__all__ = [
    "cuda_ops", "fast_ops", "CudaOps", "mm_practice", "sum_practice", "Conv1dFun", "Conv2dFun",
    "conv1d", "conv2d", "FastOps", "Conv1d", "Conv2d", "Linear", "Max", "argmax", "avgpool2d",
    "dropout", "logsoftmax", "max", "maxpool2d", "softmax", "tile",
    "operators", "Context", "Variable", "backpropagate", "central_difference", "topological_sort",
    "datasets", "Module", "Parameter", "SGD", "Optimizer", "Scalar", "ScalarHistory",
    "derivative_check", "ScalarFunction", "History", "Tensor", "MAX_DIMS", "Index", "IndexingError",
    "OutIndex", "Shape", "Storage", "Strides", "TensorData", "UserIndex", "UserShape", "UserStrides",
    "broadcast_index", "index_to_position", "shape_broadcast", "strides_from_shape", "to_index",
    "Function", "_tensor", "grad_central_difference", "grad_check", "rand", "tensor", "zeros",
    "SimpleBackend", "SimpleOps", "TensorBackend", "TensorOps", "MathTest", "MathTestVariable", "prod",
]
