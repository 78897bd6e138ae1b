#!/usr/bin/env python3
"""Independent reference for the MiniLM embedder: a plain numpy forward pass of
BERT (all-MiniLM-L6-v2) over the same safetensors, with sentence-transformers'
mean pooling and L2 normalisation, in float64.

Writes golden token ids and vectors that crates/enclave-embed/tests/reference.rs
compares the candle implementation against (cosine distance <= 1e-4).

    python3 -m venv .cache/refenv && .cache/refenv/bin/pip install numpy safetensors tokenizers
    .cache/refenv/bin/python tools/reference_embed.py .cache/model > crates/enclave-embed/tests/fixtures/minilm_golden.json
"""
import json
import math
import sys

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

SENTENCES = [
    "The quarterly revenue report shows steady growth across all regions.",
    "How do I get my money back?",
    "Refunds are paid to the original card five to seven days after the kit arrives.",
    "Globex Cloud encrypts every customer volume with AES-256 and rotates keys every 90 days.",
    "a",
    "Überweisungen über 10.000 € benötigen eine zweite Freigabe.",
    "def add(a, b):\n    return a + b  # adds two numbers",
    " ".join(["tenant isolation is enforced by the database itself"] * 12),
]


def layer_norm(x, w, b, eps=1e-12):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def gelu(x):
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def embed(w, ids):
    n = len(ids)
    g = lambda k: w[k].astype(np.float64)
    x = g("embeddings.word_embeddings.weight")[ids]
    x = x + g("embeddings.position_embeddings.weight")[:n]
    x = x + g("embeddings.token_type_embeddings.weight")[0]
    x = layer_norm(x, g("embeddings.LayerNorm.weight"), g("embeddings.LayerNorm.bias"))
    heads, dh = 12, 32
    for i in range(6):
        p = f"encoder.layer.{i}."
        lin = lambda t, name: t @ g(p + name + ".weight").T + g(p + name + ".bias")
        q = lin(x, "attention.self.query").reshape(n, heads, dh).transpose(1, 0, 2)
        k = lin(x, "attention.self.key").reshape(n, heads, dh).transpose(1, 0, 2)
        v = lin(x, "attention.self.value").reshape(n, heads, dh).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) / math.sqrt(dh)
        s = np.exp(s - s.max(-1, keepdims=True))
        s = s / s.sum(-1, keepdims=True)
        ctx = (s @ v).transpose(1, 0, 2).reshape(n, heads * dh)
        a = lin(ctx, "attention.output.dense")
        x = layer_norm(a + x, g(p + "attention.output.LayerNorm.weight"), g(p + "attention.output.LayerNorm.bias"))
        h = gelu(lin(x, "intermediate.dense"))
        o = lin(h, "output.dense")
        x = layer_norm(o + x, g(p + "output.LayerNorm.weight"), g(p + "output.LayerNorm.bias"))
    pooled = x.mean(0)
    return pooled / np.linalg.norm(pooled)


def main():
    model_dir = sys.argv[1]
    w = load_file(f"{model_dir}/model.safetensors")
    w = {k.removeprefix("bert."): v for k, v in w.items()}
    tok = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    tok.no_padding()
    tok.no_truncation()
    out = []
    for s in SENTENCES:
        ids = tok.encode(s).ids
        out.append({"text": s, "ids": ids, "vector": [round(float(x), 8) for x in embed(w, ids)]})
    json.dump({"model": "sentence-transformers/all-MiniLM-L6-v2", "reference": "numpy float64 forward pass (tools/reference_embed.py)", "cases": out}, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
