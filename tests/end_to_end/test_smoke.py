from harness import count_orders, load_sample_data


def test_backup_then_restore_latest_after_accidental_data_loss(running_project):
    load_sample_data(running_project, 3000)
    running_project.ok("backup")
    with running_project.connect("demo") as connection:
        connection.execute("DELETE FROM orders WHERE id > 10")
    assert count_orders(running_project) == 10
    refused = running_project.pgdr("restore", "latest")
    assert refused.returncode == 3, refused.stderr
    assert "--clean" in refused.stderr
    running_project.ok("restore", "latest", "--clean", "--yes")
    assert count_orders(running_project) == 3000
    running_project.ok("init")
    running_project.ok("verify")
