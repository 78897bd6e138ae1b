//! The candle MiniLM agrees with an independent reference: golden vectors from
//! a float64 numpy forward pass over the same weights (tools/reference_embed.py).

use std::path::PathBuf;

use enclave_embed::{MiniLm, MiniLmOptions};
use serde_json::Value;

fn model_dir() -> PathBuf {
    let dir = std::env::var_os("ENCLAVE_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/model"));
    assert!(
        dir.join("model.safetensors").exists(),
        "model missing in {}; run scripts/setup",
        dir.display()
    );
    dir
}

fn cosine_distance(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * y).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x.powi(2)).sum::<f64>().sqrt();
    1.0 - dot / (na * nb)
}

#[test]
fn embeddings_match_the_numpy_reference_within_1e_4_cosine_distance() {
    let golden: Value = serde_json::from_str(include_str!("fixtures/minilm_golden.json")).unwrap();
    let cases = golden["cases"].as_array().unwrap();
    let model = MiniLm::load(MiniLmOptions::new(model_dir())).unwrap();
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    // One call: different lengths share padded batches.
    let batched = model.embed_sync(&texts).unwrap();
    let mut worst: f64 = 0.0;
    for (case, got) in cases.iter().zip(&batched) {
        let text = case["text"].as_str().unwrap();
        let ids: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            model.input_ids(text).unwrap(),
            ids,
            "tokenization of {text:?}"
        );
        let want: Vec<f64> = case["vector"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(got.len(), 384);
        let norm: f32 = got.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "unit length");
        let d = cosine_distance(got, &want);
        worst = worst.max(d);
        assert!(d <= 1e-4, "{text:?}: cosine distance {d:e}");
        // Alone (no padding) gives the same vector as in a padded batch.
        let alone = model.embed_sync(&[text]).unwrap().remove(0);
        assert!(cosine_distance(&alone, &got.iter().map(|x| *x as f64).collect::<Vec<_>>()) < 1e-6);
    }
    eprintln!("worst cosine distance to the reference: {worst:e}");
}

#[test]
fn token_counter_spans_cover_the_text_without_special_tokens() {
    let model = MiniLm::load(MiniLmOptions::new(model_dir())).unwrap();
    let counter = model.tokens();
    let text = "Refunds take 5-7 days.";
    let spans = enclave_core::TokenCounter::token_spans(&*counter, text);
    let pieces: Vec<&str> = spans.iter().map(|(s, e)| &text[*s..*e]).collect();
    assert_eq!(pieces, ["Ref", "unds", "take", "5", "-", "7", "days", "."]);
    assert_eq!(model.input_ids(text).unwrap().len(), spans.len() + 2);
}

#[test]
fn long_documents_are_tokenized_in_pieces_exactly_as_in_one_call() {
    use enclave_core::TokenCounter;
    let model = MiniLm::load(MiniLmOptions::new(model_dir())).unwrap();
    let mut whole = tokenizers::Tokenizer::from_file(model_dir().join("tokenizer.json")).unwrap();
    whole.with_truncation(None).unwrap();
    whole.with_padding(None);
    // ~200 KB of mixed text: sentences, accents, CJK, punctuation runs,
    // newlines and a very long unbroken word.
    let mut text = String::new();
    for i in 0..4_000 {
        text.push_str(&format!(
            "Refund #{i} was paid within {} days — café naïve 東京 (ok?!)\n",
            i % 7
        ));
        if i % 997 == 0 {
            text.push_str(&"x".repeat(40_000));
            text.push(' ');
        }
    }
    let expected = whole.encode(text.as_str(), false).unwrap();
    let got = model.tokens().token_spans(&text);
    let expected: Vec<(usize, usize)> = expected.get_offsets().to_vec();
    // The one difference allowed: each of the 5 unbroken 40,000-byte words
    // is cut into 3 pieces (one [UNK] becomes three; any word over 100
    // characters is [UNK] anyway). Every other span is identical.
    let (long_words, extra_each) = (5, 2);
    assert_eq!(got.len(), expected.len() + long_words * extra_each);
    let same = got
        .iter()
        .filter(|s| expected.binary_search(s).is_ok())
        .count();
    assert_eq!(same, expected.len() - long_words, "spans that agree");
}
