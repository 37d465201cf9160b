"""Everything that talks to the Hugging Face Hub: publishing, cards, Space deploy, and the local Hub server."""
