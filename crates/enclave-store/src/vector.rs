//! Exact nearest-neighbour search over a tenant's vectors held contiguously in
//! memory. Vectors are unit length, so cosine similarity is a dot product.
//! The dot product uses AVX2+FMA when the CPU has it (checked at run time) and
//! a portable loop otherwise; large scans are split across cores.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Scans with more rows than this are split across threads.
const PARALLEL_ROWS: usize = 32_768;

/// A tenant's vectors: row `i` of `data` belongs to `keys[i]`.
#[derive(Debug, Clone, Default)]
pub struct VectorSet {
    pub dims: usize,
    pub keys: Vec<i64>,
    pub data: Vec<f32>,
}

impl VectorSet {
    pub fn new(dims: usize) -> Self {
        Self {
            dims,
            keys: Vec::new(),
            data: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Appends a row; keys come in ascending order (what [`Self::scores_of`]
    /// looks them up by).
    pub fn push(&mut self, key: i64, v: &[f32]) {
        debug_assert_eq!(v.len(), self.dims);
        debug_assert!(self.keys.last().is_none_or(|last| *last < key));
        self.keys.push(key);
        self.data.extend_from_slice(v);
    }

    /// The similarity to `query` of each of `keys` that is held (in the
    /// order asked; keys not held are skipped).
    pub fn scores_of(&self, query: &[f32], keys: &[i64]) -> Vec<(i64, f32)> {
        assert_eq!(query.len(), self.dims, "query dimension");
        keys.iter()
            .filter_map(|k| {
                let i = self.keys.binary_search(k).ok()?;
                Some((
                    *k,
                    dot(query, &self.data[i * self.dims..(i + 1) * self.dims]),
                ))
            })
            .collect()
    }

    /// The `k` rows most similar to `query`, best first, optionally only rows
    /// whose key passes `allow`. Ties break by key so results are stable.
    pub fn top_k(
        &self,
        query: &[f32],
        k: usize,
        allow: Option<&(dyn Fn(i64) -> bool + Sync)>,
    ) -> Vec<(i64, f32)> {
        assert_eq!(query.len(), self.dims, "query dimension");
        if k == 0 || self.is_empty() {
            return Vec::new();
        }
        let n = self.len();
        let scan = |lo: usize, hi: usize| -> Vec<(i64, f32)> {
            let mut heap: BinaryHeap<Entry> = BinaryHeap::with_capacity(k + 1);
            for i in lo..hi {
                let key = self.keys[i];
                if let Some(f) = allow {
                    if !f(key) {
                        continue;
                    }
                }
                let s = dot(query, &self.data[i * self.dims..(i + 1) * self.dims]);
                if heap.len() < k {
                    heap.push(Entry(s, key));
                } else if let Some(worst) = heap.peek() {
                    if Entry(s, key) < *worst {
                        heap.pop();
                        heap.push(Entry(s, key));
                    }
                }
            }
            heap.into_iter().map(|e| (e.1, e.0)).collect()
        };
        let mut all = if n > PARALLEL_ROWS {
            let threads = std::thread::available_parallelism()
                .map_or(1, |p| p.get())
                .min(8);
            let per = n.div_ceil(threads);
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads)
                    .map(|t| {
                        let scan = &scan;
                        s.spawn(move || scan(t * per, ((t + 1) * per).min(n)))
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().expect("scan thread"))
                    .collect::<Vec<_>>()
            })
        } else {
            scan(0, n)
        };
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(k);
        all
    }
}

/// Heap entry ordered so that the *worst* result is the greatest (max-heap
/// of worst = bounded top-k).
#[derive(Debug, Clone, Copy)]
struct Entry(f32, i64);

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> Ordering {
        // Lower score = worse = greater; equal scores: higher key is worse.
        o.0.total_cmp(&self.0).then(self.1.cmp(&o.1))
    }
}

/// Dot product of two equal-length vectors.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports the features the function is compiled for.
            return unsafe { dot_avx2(a, b) };
        }
    }
    dot_portable(a, b)
}

fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for l in 0..8 {
            acc[l] += a[c * 8 + l] * b[c * 8 + l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in chunks * 8..a.len() {
        s += a[i] * b[i];
    }
    s
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    let mut acc2 = _mm256_setzero_ps();
    let mut acc3 = _mm256_setzero_ps();
    let mut i = 0;
    while i + 32 <= n {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
        acc1 = _mm256_fmadd_ps(
            _mm256_loadu_ps(pa.add(i + 8)),
            _mm256_loadu_ps(pb.add(i + 8)),
            acc1,
        );
        acc2 = _mm256_fmadd_ps(
            _mm256_loadu_ps(pa.add(i + 16)),
            _mm256_loadu_ps(pb.add(i + 16)),
            acc2,
        );
        acc3 = _mm256_fmadd_ps(
            _mm256_loadu_ps(pa.add(i + 24)),
            _mm256_loadu_ps(pb.add(i + 24)),
            acc3,
        );
        i += 32;
    }
    while i + 8 <= n {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
        i += 8;
    }
    let acc = _mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3));
    let hi = _mm256_extractf128_ps(acc, 1);
    let lo = _mm256_castps256_ps128(acc);
    let s4 = _mm_add_ps(hi, lo);
    let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    let s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
    let mut s = _mm_cvtss_f32(s1);
    while i < n {
        s += a[i] * b[i];
        i += 1;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand_vec(seed: &mut u64, d: usize) -> Vec<f32> {
        (0..d)
            .map(|_| {
                *seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((*seed >> 33) as f32 / (1u64 << 31) as f32) - 0.5
            })
            .collect()
    }

    #[test]
    fn simd_dot_matches_the_portable_loop() {
        let mut seed = 7;
        for d in [1, 7, 8, 31, 33, 384, 1536] {
            let a = rand_vec(&mut seed, d);
            let b = rand_vec(&mut seed, d);
            let x = dot(&a, &b);
            let y: f32 = a.iter().zip(&b).map(|(p, q)| p * q).sum();
            assert!((x - y).abs() < 1e-4 * d as f32, "d={d}: {x} vs {y}");
            assert!((dot_portable(&a, &b) - y).abs() < 1e-4 * d as f32);
        }
    }

    #[test]
    fn scores_of_are_the_scores_top_k_gives() {
        let mut seed = 5;
        let mut set = VectorSet::new(8);
        for key in [2, 3, 5, 8, 13] {
            set.push(key, &rand_vec(&mut seed, 8));
        }
        let q = rand_vec(&mut seed, 8);
        let all = set.top_k(&q, 5, None);
        let asked = set.scores_of(&q, &[13, 4, 2]);
        assert_eq!(asked.len(), 2, "4 is not held");
        for (key, s) in asked {
            assert_eq!(all.iter().find(|(k, _)| *k == key).unwrap().1, s);
        }
    }

    #[test]
    fn top_k_equals_a_full_sort_and_respects_the_filter() {
        let mut seed = 11;
        let mut set = VectorSet::new(16);
        for key in 0..2000 {
            set.push(key, &rand_vec(&mut seed, 16));
        }
        let q = rand_vec(&mut seed, 16);
        let mut all: Vec<(i64, f32)> = (0..2000)
            .map(|i| (i as i64, dot(&q, &set.data[i * 16..(i + 1) * 16])))
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        assert_eq!(set.top_k(&q, 10, None), all[..10].to_vec());
        let even = |k: i64| k % 2 == 0;
        let got = set.top_k(&q, 5, Some(&even));
        let want: Vec<_> = all
            .iter()
            .filter(|(k, _)| k % 2 == 0)
            .take(5)
            .cloned()
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn parallel_scan_agrees_with_serial() {
        let mut seed = 3;
        let mut set = VectorSet::new(8);
        for key in 0..(PARALLEL_ROWS as i64 + 5000) {
            set.push(key, &rand_vec(&mut seed, 8));
        }
        let q = rand_vec(&mut seed, 8);
        let got = set.top_k(&q, 20, None);
        let mut all: Vec<(i64, f32)> = set
            .keys
            .iter()
            .enumerate()
            .map(|(i, &k)| (k, dot(&q, &set.data[i * 8..(i + 1) * 8])))
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        assert_eq!(got, all[..20].to_vec());
    }
}
