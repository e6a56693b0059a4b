"""The PyTorch side of the verification harness.

- `reference.layout`: parameter and tensor layout conversions between `nn` and torch, in one place.
- `reference.mirrors`: a torch mirror of every `nn` layer (`torch_forward`).
- `reference.adapter`: any `nn.Layer` wrapped as a `torch.autograd.Function`.
- `reference.registry`: the cases that tests, benchmarks and the CLI all read.
- `reference.checks`: the checks run on every case.

`reference.registry` and the torch-free checks of `reference.checks` need only NumPy;
the mirrors, the adapter and the torch checks need torch. `nn` itself never imports it.
"""
