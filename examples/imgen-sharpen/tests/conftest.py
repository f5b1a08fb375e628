import pytest

# imgen's fixtures for plugin authors: imgen_registry, imgen (run the CLI), tmp_image.
pytest_plugins = ["imgen_cli.testing"]


@pytest.fixture(autouse=True)
def sharpen_plugin(imgen_registry):
    """The plugin under test, registered whether or not it is installed."""
    import imgen_sharpen

    if "sharpen" not in imgen_registry.commands:
        imgen_registry.add(imgen_sharpen, "sharpen")
    return imgen_registry
