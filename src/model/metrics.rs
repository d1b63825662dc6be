//! Evaluation metrics of a click model: ROC AUC and log-loss over predicted click
//! probabilities and 0/1 labels.

/// The area under the ROC curve: the probability that a random positive scores above a
/// random negative, ties counting one half (the Mann-Whitney U statistic, from average
/// ranks). `None` when the labels hold only one class, or the lengths differ.
pub fn roc_auc(scores: &[f32], labels: &[f32]) -> Option<f64> {
    if scores.len() != labels.len() {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let (mut positives, mut positive_rank_sum) = (0f64, 0f64);
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        // Ranks i+1..=j+1 share one score: each gets their average.
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            if labels[k] > 0.5 {
                positives += 1.0;
                positive_rank_sum += rank;
            }
        }
        i = j + 1;
    }
    let negatives = scores.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return None;
    }
    Some((positive_rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives))
}

/// Mean binary cross-entropy of probabilities against 0/1 labels, probabilities
/// clamped to `[1e-7, 1 - 1e-7]`. `None` when empty or the lengths differ.
pub fn log_loss(probabilities: &[f32], labels: &[f32]) -> Option<f64> {
    if probabilities.len() != labels.len() || probabilities.is_empty() {
        return None;
    }
    let total: f64 = probabilities
        .iter()
        .zip(labels)
        .map(|(&p, &y)| {
            let p = f64::from(p).clamp(1e-7, 1.0 - 1e-7);
            if y > 0.5 {
                -p.ln()
            } else {
                -(1.0 - p).ln()
            }
        })
        .sum();
    Some(total / probabilities.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::{log_loss, roc_auc};

    #[test]
    fn log_loss_of_known_predictions() {
        assert_eq!(log_loss(&[0.5, 0.5], &[1.0, 0.0]), Some(std::f64::consts::LN_2));
        assert!(log_loss(&[1.0], &[0.0]).unwrap() > 16.0);
        assert_eq!(log_loss(&[], &[]), None);
    }

    #[test]
    fn perfect_reversed_and_tied_rankings() {
        let labels = [0.0, 0.0, 1.0, 1.0];
        assert_eq!(roc_auc(&[0.1, 0.2, 0.3, 0.4], &labels), Some(1.0));
        assert_eq!(roc_auc(&[0.4, 0.3, 0.2, 0.1], &labels), Some(0.0));
        assert_eq!(roc_auc(&[0.5; 4], &labels), Some(0.5));
    }

    #[test]
    fn counts_pairs_like_the_definition() {
        // Positives 0.8, 0.4, 0.6; negatives 0.3, 0.6: six pairs.
        let scores = [0.8, 0.3, 0.4, 0.6, 0.6];
        let labels = [1.0, 0.0, 1.0, 0.0, 1.0];
        // 0.8: 2 wins; 0.4: 1 win; 0.6: 1 win + 1 tie -> 4.5 of 6.
        assert_eq!(roc_auc(&scores, &labels), Some(4.5 / 6.0));
    }

    #[test]
    fn one_class_or_mismatched_lengths_have_no_auc() {
        assert_eq!(roc_auc(&[0.1, 0.2], &[1.0, 1.0]), None);
        assert_eq!(roc_auc(&[0.1], &[1.0, 0.0]), None);
        assert_eq!(roc_auc(&[], &[]), None);
    }
}
