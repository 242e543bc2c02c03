"""A GAN whose generator learns to draw 8x8 digit-like images (scikit-learn's digits).

A custom training loop, exactly as in dlx's autograd contract: two models, two
optimizers, ``loss.backward()``, ``.grad`` and ``optimizer.apply_gradients``.
Freezing is explicit: the discriminator is frozen (``trainable = False``) while the
generator learns through it, so only the generator's weights move in that step.

    python examples/gan.py              # prints D/G losses, writes gan_samples.png with matplotlib
    python examples/gan.py --steps 400 --out samples.png
"""

import argparse

import numpy as np

import dlx
from dlx import layers, losses, optimizers

LATENT = 16


def build_generator(latent=LATENT):
    """noise (batch, latent) -> image (batch, 64) in [0, 1]."""
    return dlx.Sequential(
        [
            layers.Dense(64, input_shape=(latent,)),
            layers.BatchNormalization(),
            layers.Activation("relu"),
            layers.Dense(128),
            layers.BatchNormalization(),
            layers.Activation("relu"),
            layers.Dense(64, activation="sigmoid"),
        ],
        name="generator",
    )


def build_discriminator():
    """image (batch, 64) -> logit (batch, 1) that the image is real."""
    return dlx.Sequential(
        [
            layers.Dense(128, input_shape=(64,)),
            layers.Activation("leaky_relu"),
            layers.Dropout(0.2),
            layers.Dense(64),
            layers.Activation("leaky_relu"),
            layers.Dense(1),
        ],
        name="discriminator",
    )


class GAN:
    """Generator, discriminator and one Adam optimizer each; one step trains both in turn."""

    def __init__(self, latent=LATENT, learning_rate=2e-3):
        self.latent = latent
        self.generator = build_generator(latent)
        self.discriminator = build_discriminator()
        self.g_optimizer = optimizers.Adam(learning_rate, beta_1=0.5)
        self.d_optimizer = optimizers.Adam(learning_rate, beta_1=0.5)
        self.bce = losses.BinaryCrossentropy(from_logits=True)

    def noise(self, n):
        return dlx.get_backend().random_normal((n, self.latent))

    def discriminator_step(self, real):
        """Teach the discriminator real (label 1) from generated (label 0) images."""
        n = real.shape[0]
        with dlx.no_grad():  # the generator is not being trained here
            fake = self.generator(self.noise(n), training=True)
        d = self.discriminator
        d.zero_grad()
        loss = (
            self.bce(np.ones((n, 1), np.float32), d(real, training=True))
            + self.bce(np.zeros((n, 1), np.float32), d(fake, training=True))
        ) * 0.5
        loss.backward()
        weights = d.trainable_weights
        self.d_optimizer.apply_gradients(zip([w.grad for w in weights], weights))
        d.zero_grad()
        return loss.item()

    def generator_step(self, n):
        """Teach the generator to make the (frozen) discriminator answer "real"."""
        g, d = self.generator, self.discriminator
        d.trainable = False
        try:
            g.zero_grad()
            loss = self.bce(np.ones((n, 1), np.float32), d(g(self.noise(n), training=True)))
            loss.backward()
            weights = g.trainable_weights
            self.g_optimizer.apply_gradients(zip([w.grad for w in weights], weights))
            g.zero_grad()
        finally:
            d.trainable = True
        return loss.item()

    def sample(self, n):
        with dlx.no_grad():
            return dlx.to_numpy(self.generator(self.noise(n), training=False)).reshape(n, 8, 8)


def load_images():
    (x_train, _), (x_test, _) = dlx.data.load_digits(image_shape=(64,))
    return np.concatenate([x_train, x_test])


def save_grid(images, path):
    """A PNG grid of samples; returns False (and writes nothing) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = int(np.ceil(len(images) / 8))
    fig, axes = plt.subplots(rows, 8, figsize=(8, rows))
    for ax, image in zip(np.ravel(axes), list(images) + [None] * (rows * 8 - len(images))):
        ax.axis("off")
        if image is not None:
            ax.imshow(image, cmap="gray_r", vmin=0, vmax=1)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return True


def main(steps=600, batch_size=64, out="gan_samples.png", seed=0, verbose=True):
    dlx.set_seed(seed)
    images = load_images()
    gan = GAN()
    order = np.random.default_rng(seed).permutation(len(images))
    history = []
    for step in range(steps):
        start = (step * batch_size) % (len(images) - batch_size)
        real = images[order[start : start + batch_size]]
        d_loss = gan.discriminator_step(real)
        g_loss = gan.generator_step(batch_size)
        history.append((d_loss, g_loss))
        if verbose and (step % 100 == 0 or step == steps - 1):
            print(f"step {step:4d}  discriminator loss {d_loss:.3f}  generator loss {g_loss:.3f}")
    samples = gan.sample(32)
    if out and save_grid(samples, out) and verbose:
        print(f"saved 32 generated digits to {out}")
    elif out and verbose:
        print("matplotlib is not installed: no PNG written (pip install matplotlib)")
    return gan, history, samples


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", default="gan_samples.png")
    args = parser.parse_args()
    main(args.steps, args.batch_size, args.out)
