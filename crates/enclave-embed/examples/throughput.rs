use enclave_embed::{MiniLm, MiniLmOptions};
use std::time::Instant;
fn main() {
    let dir = std::env::args().nth(1).expect("model dir");
    let m = MiniLm::load(MiniLmOptions::new(dir)).unwrap();
    let base = "The quarterly revenue report shows steady growth across all regions, with costs flat and margins improving for the third quarter in a row while hiring resumes";
    let texts: Vec<String> = (0..400)
        .map(|i| format!("{i} {base} and {}", &base[..60 - (i % 40)]))
        .collect();
    let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
    let toks: usize = refs
        .iter()
        .map(|t| enclave_core::TokenCounter::count_tokens(&*m.tokens(), t) + 2)
        .sum();
    m.embed_sync(&refs[..16]).unwrap();
    let t = Instant::now();
    m.embed_sync(&refs).unwrap();
    let s = t.elapsed().as_secs_f64();
    println!(
        "{} sentences in {s:.2}s = {:.1}/s, {:.0} tokens/s, avg {:.1} tokens",
        refs.len(),
        refs.len() as f64 / s,
        toks as f64 / s,
        toks as f64 / refs.len() as f64
    );
}
