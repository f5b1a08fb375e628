"""A plugin that fails to import, as a third-party plugin with a missing dependency would."""

import imgen_no_such_dependency  # noqa: F401
