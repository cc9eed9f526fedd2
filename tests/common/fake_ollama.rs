//! A fake Ollama (native API) upstream. Filled in by the Ollama backend tests.
