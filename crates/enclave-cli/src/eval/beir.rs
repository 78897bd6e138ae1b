//! A BEIR-format folder: `corpus.jsonl` (`_id`, `title`, `text`),
//! `queries.jsonl` (`_id`, `text`) and `qrels/<split>.tsv`
//! (`query-id  corpus-id  score`, with a header line).

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::metrics::Judged;

#[derive(Deserialize)]
pub struct CorpusDoc {
    #[serde(rename = "_id")]
    pub id: String,
    #[serde(default)]
    pub title: String,
    pub text: String,
}

impl CorpusDoc {
    /// What is indexed: the title as a heading line, then the text.
    pub fn content(&self) -> String {
        if self.title.trim().is_empty() {
            self.text.clone()
        } else {
            format!("{}\n\n{}", self.title.trim(), self.text)
        }
    }
}

#[derive(Deserialize)]
struct QueryLine {
    #[serde(rename = "_id")]
    id: String,
    text: String,
}

/// A judged query of the split.
pub struct Query {
    pub id: String,
    pub text: String,
    pub judged: Judged,
}

pub struct Dataset {
    pub corpus: Vec<CorpusDoc>,
    /// In the order of their ids, so runs are comparable.
    pub queries: Vec<Query>,
}

pub fn load(dir: &Path, split: &str) -> Result<Dataset> {
    let corpus: Vec<CorpusDoc> = jsonl(&dir.join("corpus.jsonl"))?;
    if corpus.is_empty() {
        bail!("{}: the corpus is empty", dir.display());
    }
    let texts: HashMap<String, String> = jsonl::<QueryLine>(&dir.join("queries.jsonl"))?
        .into_iter()
        .map(|q| (q.id, q.text))
        .collect();
    let qrels = dir.join("qrels").join(format!("{split}.tsv"));
    let mut judged: BTreeMap<String, Judged> = BTreeMap::new();
    let file = std::fs::File::open(&qrels).with_context(|| qrels.display().to_string())?;
    for (no, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        let f: Vec<&str> = line.split('\t').collect();
        if no == 0 && f.first() == Some(&"query-id") || line.trim().is_empty() {
            continue;
        }
        let [q, d, g] = f[..] else {
            bail!(
                "{}:{}: expected three tab-separated fields",
                qrels.display(),
                no + 1
            );
        };
        let g: u32 = g
            .trim()
            .parse()
            .with_context(|| format!("{}:{}: score", qrels.display(), no + 1))?;
        judged
            .entry(q.to_owned())
            .or_default()
            .insert(d.to_owned(), g);
    }
    let mut queries = Vec::with_capacity(judged.len());
    for (id, judged) in judged {
        let Some(text) = texts.get(&id) else {
            bail!(
                "{}: query {id} is judged but not in queries.jsonl",
                qrels.display()
            );
        };
        queries.push(Query {
            id,
            text: text.clone(),
            judged,
        });
    }
    Ok(Dataset { corpus, queries })
}

fn jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let file = std::fs::File::open(path).with_context(|| path.display().to_string())?;
    std::io::BufReader::new(file)
        .lines()
        .enumerate()
        .filter(|(_, l)| l.as_ref().map_or(true, |l| !l.trim().is_empty()))
        .map(|(no, l)| {
            serde_json::from_str(&l?).with_context(|| format!("{}:{}", path.display(), no + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_beir_folder_loads_judged_queries_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("corpus.jsonl"),
            "{\"_id\":\"d1\",\"title\":\"T\",\"text\":\"one\"}\n{\"_id\":\"d2\",\"text\":\"two\"}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("queries.jsonl"),
            "{\"_id\":\"1\",\"text\":\"q one\"}\n{\"_id\":\"2\",\"text\":\"unjudged\"}\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("qrels")).unwrap();
        std::fs::write(
            dir.path().join("qrels/train.tsv"),
            "query-id\tcorpus-id\tscore\n1\td1\t1\n1\td2\t2\n",
        )
        .unwrap();
        let ds = load(dir.path(), "train").unwrap();
        assert_eq!(ds.corpus.len(), 2);
        assert_eq!(ds.corpus[0].content(), "T\n\none");
        assert_eq!(ds.corpus[1].content(), "two");
        assert_eq!(ds.queries.len(), 1);
        assert_eq!(ds.queries[0].text, "q one");
        assert_eq!(ds.queries[0].judged["d2"], 2);
        assert!(
            load(dir.path(), "test").is_err(),
            "a missing split is an error"
        );
    }
}
