"""What reads a study once trials exist: results, the summary table, the HTML report, retraining the winners
(with the final recipe), test metrics, and labelling new images (predict)."""
