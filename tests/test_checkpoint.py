"""Checkpoints: resuming from one equals the uninterrupted run bit for bit, and a
process killed (SIGKILL) in the middle of saving leaves a loadable previous file."""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import dlx
from dlx import callbacks, layers


def data(n=80, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype("float32")
    y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).astype("int64")
    return x, y


def fresh_model():
    dlx.set_seed(1)
    model = dlx.Sequential(
        [
            layers.Dense(16, activation="relu", input_shape=(6,)),
            layers.Dropout(0.3),  # draws from the random stream every step
            layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


FIT = dict(batch_size=16, validation_split=0.25, shuffle=True, verbose=0)


OPTIMIZERS = {
    "adam": lambda: "adam",
    "rmsprop": lambda: "rmsprop",
    "sgd_momentum_decay_schedule": lambda: dlx.optimizers.SGD(
        dlx.optimizers.schedules.ExponentialDecay(0.1, decay_steps=3, decay_rate=0.5),
        momentum=0.9,
        nesterov=True,
    ),
    "adamw_clipnorm": lambda: dlx.optimizers.AdamW(3e-3, clipnorm=0.5),
}


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_resume_from_checkpoint_equals_uninterrupted_training(backend, tmp_path, optimizer):
    x, y = data()

    def model_with(name):
        model = fresh_model()
        model.compile(
            optimizer=OPTIMIZERS[name](),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        return model

    uninterrupted = model_with(optimizer)
    full = uninterrupted.fit(x, y, epochs=5, **FIT)

    interrupted = model_with(optimizer)
    checkpoint = callbacks.ModelCheckpoint(str(tmp_path / "ckpt-{epoch}.dlx"))
    interrupted.fit(x, y, epochs=2, callbacks=[checkpoint], **FIT)
    del interrupted

    dlx.set_seed(12345)  # a new process would start from some other random state
    dlx.backends.permutation(7)
    resumed = dlx.load_model(tmp_path / "ckpt-2.dlx")
    assert resumed.initial_epoch == 2
    rest = resumed.fit(x, y, epochs=5, initial_epoch=resumed.initial_epoch, **FIT)

    assert resumed.optimizer.iterations == uninterrupted.optimizer.iterations == 5 * 4
    for a, b in zip(uninterrupted.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)  # bit for bit
    for key in full.history:
        assert rest.history[key] == full.history[key][2:], key
    assert rest.epoch == [2, 3, 4]


def test_resume_needs_the_random_state_to_be_exact(tmp_path):
    """The control experiment: without restoring the random state the runs differ."""
    x, y = data()
    uninterrupted = fresh_model()
    uninterrupted.fit(x, y, epochs=3, **FIT)
    interrupted = fresh_model()
    interrupted.fit(
        x, y, epochs=1, callbacks=[callbacks.ModelCheckpoint(str(tmp_path / "c.dlx"))], **FIT
    )
    dlx.set_seed(999)
    resumed = dlx.load_model(tmp_path / "c.dlx", restore_random_state=False)
    resumed.fit(x, y, epochs=3, initial_epoch=1, **FIT)
    assert not np.array_equal(uninterrupted.get_weights()[0], resumed.get_weights()[0])


CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    import dlx
    from dlx import layers

    path = sys.argv[1]
    dlx.set_seed(0)
    model = dlx.Sequential([layers.Dense(384, input_shape=(384,)), layers.Dense(384)])
    model.compile(optimizer="adam", loss="mse")
    shapes = [w.shape for w in model.get_weights()]
    generation = int(sys.argv[2])
    while True:
        generation += 1
        model.set_weights([np.full(s, generation, dtype="float32") for s in shapes])
        model.save(path)
        print(generation, flush=True)
""")


def test_sigkill_during_repeated_saves_leaves_a_loadable_checkpoint(tmp_path):
    """Kill a real child process at random moments while it saves a ~2.4 MB model
    over and over; the file at the path must always load, holding a whole generation."""
    path = tmp_path / "model.dlx"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    rng = random.Random(0)
    last_generation = 0
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    for round_ in range(6):
        child = subprocess.Popen(
            [sys.executable, str(script), str(path), str(last_generation)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            # wait until this child has finished at least two saves
            seen = [int(child.stdout.readline()) for _ in range(2)]
            assert seen[-1] > last_generation, child.stderr.read()
            time.sleep(rng.uniform(0.0, 0.08))  # then kill it mid-save, most likely
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
            rest = child.stdout.read().split()
            child.stdout.close()
            child.stderr.close()
        assert child.returncode == -signal.SIGKILL
        printed = seen + [int(g) for g in rest]
        model = dlx.load_model(path)
        values = np.unique(np.concatenate([w.ravel() for w in model.get_weights()]))
        assert values.size == 1, f"round {round_}: a torn file mixes generations {values[:5]}"
        generation = int(values[0])
        # the survivor is the last completed save, or the one whose rename had just happened
        assert printed[-1] <= generation <= printed[-1] + 1, (generation, printed[-3:])
        last_generation = generation
    leftovers = [name for name in os.listdir(tmp_path) if ".tmp-" in name]
    assert len(leftovers) <= 6  # temporary files of killed saves, never the target itself


RESUME_CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    import dlx
    from dlx import callbacks, layers

    stage, folder = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 6)).astype("float32")
    y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).astype("int64")
    fit = dict(batch_size=16, validation_split=0.25, shuffle=True, verbose=0)
    if stage == "first":
        dlx.set_seed(1)
        model = dlx.Sequential([
            layers.Dense(16, activation="relu", input_shape=(6,)),
            layers.Dropout(0.3),
            layers.Dense(2, activation="softmax"),
        ])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        model.fit(x, y, epochs=2, callbacks=[callbacks.ModelCheckpoint(folder + "/ckpt.dlx")],
                  **fit)
    else:
        model = dlx.load_model(folder + "/ckpt.dlx")
        model.fit(x, y, epochs=5, initial_epoch=model.initial_epoch, **fit)
        model.save_weights(folder + "/final.dlx")
""")


def test_resume_in_a_new_process_equals_uninterrupted_training(tmp_path):
    script = tmp_path / "resume.py"
    script.write_text(RESUME_CHILD)
    for stage in ("first", "second"):
        subprocess.run(
            [sys.executable, str(script), stage, str(tmp_path)],
            check=True,
            timeout=120,
            capture_output=True,
        )
    x, y = data()
    uninterrupted = fresh_model()
    uninterrupted.fit(x, y, epochs=5, **FIT)
    resumed = fresh_model()
    resumed.load_weights(tmp_path / "final.dlx")
    for a, b in zip(uninterrupted.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_random_state_accessors():
    dlx.set_seed(7)
    state = dlx.backends.get_random_state()
    first = dlx.backends.permutation(20)
    dlx.backends.set_random_state(state)
    np.testing.assert_array_equal(dlx.backends.permutation(20), first)
    for bad in (
        None,
        {
            "bit_generator": "MT19937",
            "state": {"state": 1, "inc": 1},
            "has_uint32": 0,
            "uinteger": 0,
        },
        {**state, "state": {"state": -1, "inc": 3}},
        {**state, "has_uint32": "0"},
    ):
        with pytest.raises(ValueError, match="random state"):
            dlx.backends.set_random_state(bad)
