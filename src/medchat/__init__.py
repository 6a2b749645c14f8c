"""medchat: fine-tune a seq2seq model into a medical Q&A chatbot, and measure the gain."""

__version__ = "0.1.0"
