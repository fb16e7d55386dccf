"""Shared fixtures, and the order the tests run in (LONGEST_FIRST). Fixtures that need real
MNIST skip with a reason when MNIST_DIR is unset.
(Plain helper functions and the needs_mnist mark live in tests/helpers.py.)"""
import json
import os

import pytest

# README runs the tests with MNIST_DIR=../shared/mnist: made absolute once, so that commands
# the tests start in other folders (the grader check under TF 2.18) find the same files.
if os.environ.get("MNIST_DIR"):
    os.environ["MNIST_DIR"] = os.path.abspath(os.environ["MNIST_DIR"])


@pytest.fixture(scope="session")
def keras_fc128_run(tmp_path_factory):
    """One real training: fc128, custom loop, 1 epoch on the full 55k split, seed 0.

    Returns {"logdir": Path, "result": the --json summary}. Shared by the train,
    test and --apply tests so the suite trains it once (a few seconds).
    """
    mnist_dir = os.environ.get("MNIST_DIR")
    if not mnist_dir:
        pytest.skip("MNIST_DIR is not set (real MNIST needed to train fc128)")
    from keras_impl import train_cli

    logdir = tmp_path_factory.mktemp("fc128-custom")
    summary = logdir / "summary.json"
    code = train_cli.main(["--model", "fc128", "--loop", "custom", "--epochs", "1", "--seed", "0",
                           "--data-dir", mnist_dir, "--logdir", str(logdir / "run"),
                           "--json", str(summary)])
    assert code == 0
    return {"logdir": logdir / "run", "result": json.loads(summary.read_text())}


@pytest.fixture(scope="module")
def one_blas_thread():
    """For modules of small matrices: a second BLAS thread only adds waiting."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="session")
def quick_lab_models(request, tmp_path_factory):
    """The lab's quick twins, as `python compare.py lab` starts them (lab_support), loaded
    or trained once for the API and the browser tests."""
    if not os.environ.get("MNIST_DIR"):
        pytest.skip("MNIST_DIR is not set (the quick model trains on MNIST)")
    from lab_support import quick_models

    return quick_models(request.config, tmp_path_factory)


NOTEBOOK_RUN = "tests/test_tutorials.py::test_notebook_runs_top_to_bottom_in_fast_mode["
RESUME = "tests/test_keras_train.py::test_resume_after_a_clean_stop_equals_an_uninterrupted_run["
# The default suite's longest tests (pytest --durations), longest first; an entry is a
# test id or the start of one. They run first, so that under `-n auto` (--dist worksteal,
# pyproject.toml) the tests left at the end are short and both workers finish together.
LONGEST_FIRST = [
    NOTEBOOK_RUN + "14_write_your_own_layer]",
    NOTEBOOK_RUN + "13_experiments]",
    "tests/test_bugs.py::test_every_bug_is_caught_by_a_cheap_check_and_the_reference_by_none",
    "tests/test_parallel.py::test_two_worker_processes_train_as_one_process_with_two_replicas",
    "tests/test_lab_browser.py",  # the whole module: its browser and server start once
    RESUME + "fit-best]",
    "tests/test_compare.py::test_end_to_end_run_on_a_subset",
    NOTEBOOK_RUN + "12_side_by_side]",
    "tests/test_localize.py::test_compare_inject_runs_the_whole_comparison_with_the_bug_and_",
    "tests/test_keras_test.py::test_keras_and_h5_files_give_the_same_report_and_figures",
    NOTEBOOK_RUN + "15_explanations]",
    "tests/test_parallel.py::test_two_replicas_of_an_mlp_agree_with_one_device_and_with_keras",
    NOTEBOOK_RUN + "16_data_parallel]",
    "tests/test_terminal.py::test_a_training_run_prints_nothing_on_stderr",
    "tests/test_exercises.py::test_reference_functions_pass_every_check[residual]",
    RESUME + "custom-best]",
    "tests/test_curriculum_layers.py::test_residual_central_differences_in_training_check_entries",
    "tests/test_parallel.py::test_batchnorm_replicas_match_keras_and_only_synchronized_match_one_",
    NOTEBOOK_RUN,  # the other notebooks: 15 to 25 s each
    "tests/test_export.py::test_grader_load_under_tf218",
    "tests/test_bad_input.py::test_a_model_without_10_outputs",
    "tests/test_lab_api.py::test_the_lab_serves_until_ctrl_c",
    "tests/test_network_gradients.py::test_backward_matches_central_differences[0-best]",
    "tests/test_bad_input.py::test_grader_check_names_every_model_it_cannot_grade",
    "tests/test_keras_train.py::test_a_signal_ends_the_command_in_one_line_and_resume_is_exact",
]


def pytest_collection_modifyitems(items):
    """LONGEST_FIRST's tests first, in its order; the others keep theirs."""
    def rank(item):
        return next((i for i, start in enumerate(LONGEST_FIRST) if item.nodeid.startswith(start)),
                    len(LONGEST_FIRST))

    items.sort(key=rank)
