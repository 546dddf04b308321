#!/usr/bin/python3
"""PyTorch sequence models -> a predictd model version (SEQUENCE).

ConvLstmNet below is the reference network predictd runs: over `steps`
feature vectors (oldest first, each standardised per feature by the scaler),
Conv1d layers (stride 1, zero padding, PyTorch's out x in x kernel weights)
each followed by an activation, then an optional one-layer LSTM (gates
i, f, g, o; zero initial state) whose final hidden state h_T feeds Dense
layers, the last one linear, giving 3 logits; probabilities are their
softmax. Without an LSTM the last conv step feeds the head. Train it, save
it with save_checkpoint() (weights, architecture, scaler, class names), and
export the checkpoint with this tool.

Exactness: PyTorch runs the module in float32; predictd computes in double
with the same (float32-valued) weights. The golden probabilities are the
module's own forward pass in float64 (a double copy of the trained module),
which is what predictd reproduces; the float32 forward pass agrees to ~1e-7
(checked at export within 1e-5).

Usage: /usr/bin/python3 tools/export_torch.py --checkpoint NET.pt
           --symbol BTCUSDT --timeframe 15m [...]
(see tools/README.md and --help)
"""

import argparse
import copy
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import predictd_model as pm  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

CHECKPOINT_FORMAT = "predictd-convlstm-1"
FLOAT32_TOL = 1e-5
_ACTS = {"linear": "LINEAR", "relu": "RELU", "tanh": "TANH", "sigmoid": "SIGMOID",
         "gelu": "GELU"}


def _act(name, v):
    if name == "linear":
        return v
    if name == "relu":
        return torch.relu(v)
    if name == "tanh":
        return torch.tanh(v)
    if name == "sigmoid":
        return torch.sigmoid(v)
    if name == "gelu":
        return nn.functional.gelu(v)  # exact erf form, as predictd's GELU
    raise ValueError("activation %r" % name)


class ConvLstmNet(nn.Module):
    """Conv1d layers -> optional LSTM -> Dense head, over a window of feature
    vectors. Input: batch x steps x n_features (scaled); output: batch x 3
    logits.

    conv: list of (out_channels, kernel, padding, activation) per layer.
    lstm_hidden: LSTM hidden size, 0 for none. head: hidden Dense sizes
    before the 3-way output (e.g. [16] is Linear -> act -> Linear)."""

    def __init__(self, n_features=14, steps=16, conv=((16, 3, 1, "relu"),), lstm_hidden=32,
                 head=(), head_activation="relu", n_classes=3):
        super().__init__()
        self.config = dict(n_features=int(n_features), steps=int(steps),
                           conv=[list(c) for c in conv], lstm_hidden=int(lstm_hidden),
                           head=[int(h) for h in head], head_activation=head_activation,
                           n_classes=int(n_classes))
        for c in conv:
            if c[3] not in _ACTS:
                raise ValueError("conv activation %r" % (c[3],))
        if head_activation not in _ACTS:
            raise ValueError("head activation %r" % head_activation)
        self.convs = nn.ModuleList()
        cin = n_features
        for out_c, k, pad, _ in conv:
            self.convs.append(nn.Conv1d(cin, out_c, k, padding=pad))
            cin = out_c
        self.lstm = nn.LSTM(cin, lstm_hidden, num_layers=1, batch_first=True) \
            if lstm_hidden else None
        width = lstm_hidden if lstm_hidden else cin
        self.head = nn.ModuleList()
        for h in list(head) + [n_classes]:
            self.head.append(nn.Linear(width, h))
            width = h

    def forward(self, x):
        h = x.transpose(1, 2)  # batch x channels x steps
        for conv, spec in zip(self.convs, self.config["conv"]):
            h = _act(spec[3], conv(h))
        h = h.transpose(1, 2)  # batch x steps x channels
        if self.lstm is not None:
            _, (hn, _) = self.lstm(h)
            v = hn[-1]
        else:
            v = h[:, -1]
        for i, lin in enumerate(self.head):
            v = lin(v)
            if i < len(self.head) - 1:
                v = _act(self.config["head_activation"], v)
        return v


def save_checkpoint(path, net, mean=None, scale=None, classes=("LONG", "SHORT", "NO_TRADE")):
    """Saves what export needs: the architecture, the weights, the scaler
    (mean, scale per feature; None: identity) and the class name of each
    output, in output order."""
    torch.save({"format": CHECKPOINT_FORMAT, "config": net.config,
                "state_dict": net.state_dict(),
                "scaler": None if mean is None else {"mean": [float(v) for v in mean],
                                                     "scale": [float(v) for v in scale]},
                "classes": list(classes)}, path)


def load_checkpoint(path):
    """(net, mean, scale, classes) from save_checkpoint's file."""
    ck = torch.load(path, map_location="cpu")
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise pm.ExportError("%s: not a %s checkpoint (save it with export_torch."
                             "save_checkpoint)" % (path, CHECKPOINT_FORMAT))
    net = ConvLstmNet(**ck["config"])
    net.load_state_dict(ck["state_dict"])
    sc = ck.get("scaler")
    mean = None if sc is None else np.asarray(sc["mean"], dtype=np.float64)
    scale = None if sc is None else np.asarray(sc["scale"], dtype=np.float64)
    return net, mean, scale, ck.get("classes")


def _arr(t):
    return t.detach().to(torch.float64).cpu().numpy()


def _conv_msg(conv, activation):
    p = pm.pb2()
    if conv.stride != (1,) or conv.dilation != (1,) or conv.groups != 1 or \
            conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise pm.ExportError("Conv1d must have stride 1, dilation 1, groups 1 and integer "
                             "zero padding")
    c = p.Conv1d()
    c.in_channels, c.out_channels = conv.in_channels, conv.out_channels
    c.kernel, c.padding = conv.kernel_size[0], conv.padding[0]
    c.weights.extend(_arr(conv.weight).ravel().tolist())  # out x in x kernel
    c.bias.extend(_arr(conv.bias).tolist() if conv.bias is not None
                  else [0.0] * conv.out_channels)
    c.activation = p.Activation.Value(_ACTS[activation])
    return c


def _lstm_msg(lstm):
    p = pm.pb2()
    if lstm.num_layers != 1 or lstm.bidirectional or getattr(lstm, "proj_size", 0):
        raise pm.ExportError("LSTM must be one layer, unidirectional, without projection")
    H = lstm.hidden_size
    ls = p.Lstm()
    ls.input_size, ls.hidden_size = lstm.input_size, H
    ls.weight_ih.extend(_arr(lstm.weight_ih_l0).ravel().tolist())
    ls.weight_hh.extend(_arr(lstm.weight_hh_l0).ravel().tolist())
    zeros = [0.0] * (4 * H)
    ls.bias_ih.extend(_arr(lstm.bias_ih_l0).tolist() if lstm.bias else zeros)
    ls.bias_hh.extend(_arr(lstm.bias_hh_l0).tolist() if lstm.bias else zeros)
    return ls


def library_proba(net, X, mean, scale):
    """(float32 module, float64 copy) probabilities for raw inputs X
    (n x steps x n_features), output order."""
    X = np.asarray(X, dtype=np.float64)
    Z = (X - mean) / scale
    net64 = copy.deepcopy(net).double().eval()
    was = net.training
    net.eval()
    with torch.no_grad():
        p64 = torch.softmax(net64(torch.from_numpy(Z)), dim=1).numpy()
        p32 = torch.softmax(net(torch.from_numpy(Z.astype(np.float32))), dim=1) \
            .to(torch.float64).numpy()
    net.train(was)
    return p32, p64


def export(net, mean=None, scale=None, classes=None, features=pm.DEFAULT_FEATURES,
           window=pm.DEFAULT_WINDOW, policy=None, meta=None, golden_inputs=None,
           n_golden=pm.N_GOLDEN):
    """(Model, Scaler) from a ConvLstmNet. mean/scale: the per-feature
    scaler the net was trained behind (None: identity). classes: class name
    per output (default LONG, SHORT, NO_TRADE). golden_inputs: raw windows,
    n x steps x n_features (or n x steps*n_features). Raises ExportError."""
    if not isinstance(net, ConvLstmNet):
        raise pm.ExportError("only export_torch.ConvLstmNet is supported, not %s"
                             % type(net).__name__)
    cfg = net.config
    features = list(features)
    nf, steps = len(features), cfg["steps"]
    if cfg["n_features"] != nf:
        raise pm.ExportError("the net reads %d features, %d specs given" % (cfg["n_features"], nf))
    if cfg["n_classes"] != 3:
        raise pm.ExportError("the net has %d outputs, predictd needs 3" % cfg["n_classes"])
    names = pm.resolve_classes([0, 1, 2], classes)
    sc = pm.make_scaler(features, mean, scale)
    mean, scale = np.asarray(sc.mean), np.asarray(sc.scale)
    if meta is None:
        meta = pm.make_meta("torch " + torch.__version__)

    m = pm.new_model("SEQUENCE", features, names, window, policy, meta)
    sq = m.sequence
    sq.steps = steps
    for conv, spec in zip(net.convs, cfg["conv"]):
        sq.conv.append(_conv_msg(conv, spec[3]))
    if net.lstm is not None:
        sq.lstm.CopyFrom(_lstm_msg(net.lstm))
    last = len(net.head) - 1
    for i, lin in enumerate(net.head):
        sq.head.append(pm.dense(_arr(lin.weight), _arr(lin.bias) if lin.bias is not None
                                else np.zeros(lin.out_features),
                                "LINEAR" if i == last else _ACTS[cfg["head_activation"]]))

    if golden_inputs is None:
        golden_inputs = pm.synth_inputs(n_golden * steps, nf, mean, scale)
    X = np.asarray(golden_inputs, dtype=np.float64).reshape(-1, steps, nf)
    rows = X[np.unique(np.linspace(0, len(X) - 1, min(n_golden, len(X))).round().astype(int))]
    p32, p64 = library_proba(net, rows, mean, scale)
    if np.max(np.abs(p32 - p64)) > FLOAT32_TOL:
        raise pm.ExportError("float32 and float64 forward passes differ by %.3g"
                             % np.max(np.abs(p32 - p64)))
    pm.add_golden(m, rows.reshape(len(rows), -1), p64)
    pm.check_model(m, sc)
    return m, sc


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Export a ConvLstmNet checkpoint (export_torch.save_checkpoint) as a "
        "predictd SEQUENCE model version.")
    ap.add_argument("--checkpoint", required=True, help="file from save_checkpoint() "
                    "(only load files you trust: torch.load unpickles)")
    ap.add_argument("--scaler", help="override the checkpoint's scaler (joblib/pickle "
                    "StandardScaler, .npz or .json with mean and scale)")
    pm.add_common_args(ap)
    args = ap.parse_args(argv)
    net, mean, scale, classes = load_checkpoint(args.checkpoint)
    if args.scaler:
        mean, scale = pm.load_scaler(args.scaler)
    golden = pm.read_rows(args.inputs) if args.inputs else None
    m, sc = export(net, mean, scale, args.classes or classes, pm.features_from_args(args),
                   args.window, pm.policy_from_args(args),
                   pm.meta_from_args(args, "torch " + torch.__version__), golden, args.n_golden)
    pm.write_from_args(args, m, sc)
    return 0


if __name__ == "__main__":
    pm.run_cli(main)
