"""Loading of the reference vectors computed by the authors' implementation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import sheafsim as ss

REFERENCE_DIR = Path(__file__).parent / "reference"


def load(name: str) -> dict:
    """Return the parsed JSON of reference case ``name``."""
    return json.loads((REFERENCE_DIR / f"{name}.json").read_text())


def names(kind: str) -> list[str]:
    """Return the names of every reference case of ``kind``."""
    found = []
    for path in sorted(REFERENCE_DIR.glob("*.json")):
        if json.loads(path.read_text())["kind"] == kind:
            found.append(path.stem)
    return found


def network(case: dict) -> ss.NeuralSheaf:
    """Build the neural sheaf of a reference case."""
    spec = case["network"]
    return ss.NeuralSheaf(
        spec["weights"], spec["biases"], output=spec["output_activation"]
    )


def initial_state(case: dict) -> dict[str, np.ndarray]:
    """Initial free stalks of a reference case, keyed by vertex name.

    The hard-pin case stores its initial state after the pin was written into it,
    while the reference run started from the unpinned state (its step-0 discord
    equals the unpinned case's). The unpinned ``z1`` is taken from
    ``relu_2_4_1``, whose initial state is otherwise identical.
    """
    raw = case["initial_state"]
    state = {f"z{i}": np.array(z) for i, z in enumerate(raw["z"], start=1)}
    state.update({f"a{i}": np.array(a) for i, a in enumerate(raw["a"], start=1)})
    if "a_output" in raw:
        state["y_out"] = np.array(raw["a_output"])
    if case["name"] == "hard_pin_z1_2_4_1":
        state["z1"] = np.array(load("relu_2_4_1")["initial_state"]["z"][0])
    return state


def pins(case: dict) -> tuple[list[ss.HardPin], list[ss.SoftPin]]:
    """Hard and soft pins of a reference case."""
    hard, soft = [], []
    for pin in case.get("pins", []):
        if pin["type"] == "hard":
            hard.append(ss.HardPin(pin["vertex"], pin["coords"], pin["value"]))
        else:
            soft.append(
                ss.SoftPin(pin["vertex"], pin["coords"], pin["value"], pin["gamma"])
            )
    return hard, soft


def diffuse_kwargs(case: dict) -> dict:
    """Keyword arguments of ``diffuse`` that replay a reference inference case."""
    settings = case["settings"]
    hard, soft = pins(case)
    return {
        "alpha": settings["alpha"],
        "dt": settings["dt"],
        "tol": settings["tol"],
        "min_steps": settings["min_iter"],
        "max_steps": settings["max_iter"],
        "state": initial_state(case),
        "pins": hard,
        "soft_pins": soft,
        "pin_initial_state": not hard,
        "output_mode": settings["output_edge_mode"],
    }
