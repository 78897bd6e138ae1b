#!/usr/bin/env python3
"""Reference BM25 run of a BEIR folder with bm25s (Lucene BM25, k1 1.5,
b 0.75), English stop words and PyStemmer's English stemmer, over the same
document text `enclave eval` ingests (title, blank line, text).

    .cache/venv/bin/python scripts/bm25s-run.py DIR SPLIT > run.json

Prints {"name": ..., "run": {query id: [document ids, best first]}} for
the judged queries of SPLIT, 100 documents each; `enclave eval --reference
run.json` scores it beside Enclave's own modes. Installed by scripts/setup
into the ignored .cache/venv.
"""
import json
import sys

import bm25s
import Stemmer


def main() -> None:
    folder, split = sys.argv[1], sys.argv[2]
    ids, texts = [], []
    with open(f"{folder}/corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            title = (d.get("title") or "").strip()
            text = (d.get("text") or "").strip()
            ids.append(d["_id"])
            texts.append(f"{title}\n\n{text}" if title else text)
    judged = set()
    with open(f"{folder}/qrels/{split}.tsv", encoding="utf-8") as f:
        for no, line in enumerate(f):
            parts = line.split("\t")
            if no == 0 and parts[0] == "query-id":
                continue
            if len(parts) >= 3:
                judged.add(parts[0])
    queries = []
    with open(f"{folder}/queries.jsonl", encoding="utf-8") as f:
        for line in f:
            q = json.loads(line)
            if q["_id"] in judged:
                queries.append((q["_id"], q["text"]))
    stemmer = Stemmer.Stemmer("english")
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False),
                    show_progress=False)
    tokens = bm25s.tokenize([t for _, t in queries], stopwords="en", stemmer=stemmer,
                            show_progress=False)
    found, _scores = retriever.retrieve(tokens, k=min(100, len(ids)), show_progress=False)
    run = {qid: [ids[i] for i in row] for (qid, _), row in zip(queries, found.tolist())}
    json.dump({"name": "bm25s (Lucene BM25, English stop words, PyStemmer)", "run": run},
              sys.stdout)


if __name__ == "__main__":
    main()
