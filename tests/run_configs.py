"""Configurations of small runs shared by the tests of run directories."""

# Two hidden layers and a softmax output, so every edge type without pins
# occurs: affine1..3, activation1..2 and output.
DIFFUSION = """
[network]
source = "random"
widths = [3, 5, 4, 2]
output = "softmax"
seed = 1
[data]
dataset = "random"
samples = 6
[diffusion]
tol = 1e-8
integrator = "nesterov"
[runtime]
backend = "inprocess"
report_every = 5
"""
