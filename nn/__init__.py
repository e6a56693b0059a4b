"""A NumPy neural-network layer library that proves its own gradients.

Every layer follows the contract of `nn.layer.Layer`: ``forward(x) -> (y, cache)``
and ``backward(x, cache, dy, gradients) -> dx``. `nn.gradcheck` checks any layer
against finite differences.
"""

from nn.activations import GELU, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from nn.attention import MaskedSelfAttention, get_causal_mask
from nn.containers import Flatten, Sequential
from nn.convolution import Conv1D, Conv2D
from nn.dense import Dense
from nn.embedding import Embedding
from nn.initializers import kaiming_normal, kaiming_uniform, xavier_normal, xavier_uniform
from nn.io import load_parameters, save_parameters
from nn.layer import Cache, Layer
from nn.loss_base import Loss, Reduction
from nn.losses import MSE, CrossEntropy
from nn.normalization import BatchNorm2D, LayerNorm
from nn.optimizers import SGD, Adam, AdamW, BackwardPassOutput, Momentum, Optimizer, loss_and_grads
from nn.pooling import AvgPool2D, MaxPool2D
from nn.regularization import Dropout
from nn.transformer import FFN, Block

__version__ = '0.1.0'
