"""The log parsing of benchmarks/train_vs_official.py on bar lines as both trainers print them."""

from benchmarks.train_vs_official import epoch_seconds, last_map

# carriage-return refreshes of one epoch's bar, then the validation bar and the next epoch (tqdm output as logged)
LOG = (
    "        0/2         0G    0.08145     0.0483    0.04026        232        320:  88%|########8 | 7/8 [00:09<00:01,"
    "  1.23s/it]\r        0/2         0G    0.08145     0.0483    0.04026        232        320: 100%|##########| 8/8 "
    "[00:10<00:00,  1.23s/it]\r        0/2         0G    0.08145     0.0483    0.04026        232        320: 100%|"
    "##########| 8/8 [00:10<00:00,  1.28s/it]\n"
    "                 Class     Images  Instances          P          R      mAP50   mAP50-95: 100%|##########| 4/4 "
    "[00:03<00:00,  1.21it/s]\n"
    "        1/2         0G    0.07095    0.05787    0.04165        234        320: 100%|##########| 8/8 [01:07<00:00,"
    "  1.31s/it]\n"
)


def test_epoch_seconds_reads_the_finished_bar_of_each_epoch():
    assert epoch_seconds(LOG) == [10, 67]


def test_last_map_reads_the_last_row(tmp_path):
    f = tmp_path / "results.csv"
    f.write_text("  epoch,  metrics/mAP_0.5,metrics/mAP_0.5:0.95\n  0,  0.35,  0.2\n  1,  0.43,  0.254\n")
    assert last_map(f) == (0.43, 0.254)
