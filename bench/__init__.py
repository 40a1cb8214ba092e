"""The benchmark suite (`python -m bench`): a front-end of its own, outside the installed package, so the core's
import graph never reaches it (or the app, or Playwright)."""
