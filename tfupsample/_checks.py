"""Argument checks shared by the TF-level and the framework-free APIs (no TensorFlow here): each
error names the argument and what was expected."""

import numbers

import numpy as np


def _check_data_format(data_format):
    if data_format not in ("NHWC", "NCHW"):
        raise ValueError(f"data_format must be 'NHWC' or 'NCHW', got {data_format!r}")
    return data_format


def _check_padding(padding):
    if isinstance(padding, str) and padding.upper() in ("SAME", "VALID"):
        return padding.upper()
    raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}")


def _pair(value, name, data_format):
    """An int, [h, w] or a 4-list ([1, h, w, 1] NHWC, [1, 1, h, w] NCHW) -> (h, w)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        values = [value, value]
    else:
        try:
            values = list(np.asarray(value).reshape(-1))
        except Exception:  # noqa: BLE001 -- anything unparsable gets the same message
            values = None
        if values is None or len(values) not in (2, 4) or not all(
                isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)) for v in values):
            raise ValueError(f"{name} must be an int, [{name}_h, {name}_w] or a list of 4 ints, got {value!r}")
        if len(values) == 4:
            hw, other = ((2, 3), (0, 1)) if data_format == "NCHW" else ((1, 2), (0, 3))
            if values[other[0]] != 1 or values[other[1]] != 1:
                raise ValueError(f"{name} must be 1 in the batch and channel dimensions, got {value!r}")
            values = [values[hw[0]], values[hw[1]]]
    values = [int(v) for v in values]
    if min(values) < 1:
        raise ValueError(f"{name} must be positive integers, got {value!r}")
    return values
