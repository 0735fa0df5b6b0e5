"""Data completion: the conditional log-likelihood yardstick, completion of a trained VAE by inference, image
metrics, and ``complete_run`` (``pyro-vae complete``). The programs and masks are in ``pyro_vae`` (``cvae``,
``masks``, ``completion``, ``observation``).

Submodules are imported where used (``inference.completion.api`` loads the run-folder machinery)."""
