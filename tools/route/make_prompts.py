"""Prompt sets for the quantization-tier router: `sluice route calibrate --data FILE` runs
each prompt on every tier of a model, labels it with the cheapest tier whose answer is
acceptable and fits the thresholds; the held-out files measure the fitted router.

    python3 tools/route/make_prompts.py        # writes tests/data/route/*.jsonl

Deterministic (fixed seeds, no clock, no network): a second run writes byte-identical
files. Needs Jinja2 only (training/common.py renders the chat template when the sluice-tiny
split is regenerated).

- smollm2-135m.{train,heldout}.jsonl: the 220 checkable tasks of
  tools/convert/tasks/smollm2_tasks.jsonl (their checks carried over), plus prompts made
  here from templates with seeded slots (GENERATORS: word problems, code, multi-turn,
  system prompts, JSON schemas, tools, step by step, non-Latin scripts, long inputs, open
  writing); checks where the answer is computable, none for open-ended prompts (there
  "acceptable" means the same answer as the most precise tier). Split 60/40 per category.
- sluice-tiny.{train,heldout}.jsonl: every assistant turn of a seeded sample of the
  held-out conversations of training/data.py's split() (never seen in training), cut
  into cases by training/evaluate.py's cases() and turned into requests as
  loadtest/structured_eval.py sends them. Split 60/40 by conversation, per (kind,
  held-out reason), so a conversation's turns stay in one file.

A line: {"id", "source", "category", "request", "check"?} (src/calibrate/data.rs reads it);
`request` is a chat-completions body without `model`; `check` is {"kind": number|contains|
label|equals|tool, "answers": [...], "labels"?: [...]} with the semantics of
tools/convert/report_smollm2.py's check(). An id is its category and a number. Every line
is validated before anything is written (see validate()).
"""

from __future__ import annotations

import json
import random
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
OUT = ROOT / "tests" / "data" / "route"
TASKS = ROOT / "tools" / "convert" / "tasks" / "smollm2_tasks.jsonl"
SEED = 20240611
TRAIN_SHARE = 0.6
TASK_MAX_TOKENS = {"arithmetic": 32, "classification": 32, "facts": 48, "extraction": 48}
TINY_MAX_TOKENS = 96  # training/evaluate.py's MAX_NEW
TINY_SHARE = 0.22  # of the 600 held-out conversations: about 250 cases
TINY_CONTEXT = 512
ROLES = {"system", "user", "assistant", "tool"}
CHECK_KINDS = {"number", "contains", "label", "equals", "tool"}


def category(line: dict) -> str:
    return line["category"]


def split(lines: list[dict], key, sub, seed: int) -> tuple[list[dict], list[dict]]:
    """60/40 within each stratum `key(line)`: its lines ordered by `sub(line)` (ties shuffled by
    `seed`), then every item whose step crosses a multiple of 1/TRAIN_SHARE goes to train (systematic
    sampling), so each sub-kind is split 60/40 too. File order = input order."""
    rng = random.Random(seed)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, line in enumerate(lines):
        groups[key(line)].append(i)
    train: set[int] = set()
    for k in sorted(groups):
        ties = {i: rng.random() for i in groups[k]}
        offset = rng.random()
        for p, i in enumerate(sorted(groups[k], key=lambda i: (sub(lines[i]), ties[i]))):
            if int((p + 1) * TRAIN_SHARE + offset) > int(p * TRAIN_SHARE + offset):
                train.add(i)
    return [l for i, l in enumerate(lines) if i in train], [l for i, l in enumerate(lines) if i not in train]


# ---------------------------------------------------------------------------------------
# SmolLM2-135M-Instruct: templates. Each generator gets (rng, n) and returns
# {"template", "request", "check"?}; n (0-based) cycles through a category's templates.


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def item(template: str, messages: list[dict], max_tokens: int, check: dict | None = None, **extra) -> dict:
    return {"template": template, "request": {"messages": messages, **extra, "max_tokens": max_tokens}, "check": check}


def num(x) -> dict:
    return {"kind": "number", "answers": [str(x)]}


def has(*answers: str) -> dict:
    return {"kind": "contains", "answers": list(answers)}


NAMES = ["Maria", "Tom", "Aisha", "Kenji", "Lena", "Omar", "Sofia", "Lucas", "Priya", "Daniel",
         "Chloe", "Mateo", "Hana", "Ivan", "Zara", "Noah", "Elif", "Samuel"]
CITIES = ["Lyon", "Osaka", "Alexandria", "Cusco", "Bergen", "Mombasa", "Vancouver", "Seville", "Perth", "Pune",
          "Hamburg", "Busan"]

# --- word problems (GSM8K-style, answer computed here)


def draw(spec: dict, r: random.Random) -> dict:
    """Slot values: (lo, hi) an integer in range, a list a choice, a function of (slots so far, rng)."""
    slots: dict = {}
    for k, v in spec.items():
        slots[k] = v(slots, r) if callable(v) else r.choice(v) if isinstance(v, list) else r.randint(*v)
    return slots


# name: (slots, question, answer); {n} is a person's name
WORD_PROBLEMS = {
    "packs": ({"t": ["stickers", "marbles", "stamps", "trading cards", "beads"], "a": (5, 40), "b": (2, 6), "c": (3, 12),
               "d": lambda s, r: r.randint(2, s["a"])},
              "{n} has {a} {t}. {n} buys {b} packs with {c} {t} in each pack and then gives {d} {t} to a friend. "
              "How many {t} does {n} have now?", lambda s: s["a"] + s["b"] * s["c"] - s["d"]),
    "bakery": ({"a": (20, 60), "b": (10, 40), "p": (2, 6), "d": (2, 7)},
               "A bakery sells {a} loaves of bread every morning and {b} loaves every afternoon. Each loaf costs ${p}. "
               "How many dollars does the bakery earn from bread in {d} days?", lambda s: (s["a"] + s["b"]) * s["p"] * s["d"]),
    "pages": ({"a": (10, 40), "b": lambda s, r: r.randint(2, s["a"])},
              "{n} reads {a} pages of a book on Monday and twice as many pages on Tuesday. On Wednesday {n} reads {b} "
              "pages fewer than on Tuesday. How many pages did {n} read over the three days?", lambda s: 5 * s["a"] - s["b"]),
    "train": ({"v": [60, 75, 80, 90, 120], "h": (2, 5), "w": [40, 50, 70, 100], "k": (1, 4)},
              "A train travels at {v} km per hour for {h} hours, then slows down to {w} km per hour for another {k} "
              "hours. How many kilometres does it travel in total?", lambda s: s["v"] * s["h"] + s["w"] * s["k"]),
    "bus": ({"c": [20, 40, 60, 80, 100], "p": [10, 20, 25, 50, 75]},
            "A school has {c} students in year five. {p}% of them walk to school and the rest take the bus. How many "
            "of them take the bus?", lambda s: s["c"] - s["c"] * s["p"] // 100),
    "wage": ({"w": (12, 30), "h": (4, 8), "d": (3, 6), "s": list(range(50, 140, 10))},
             "{n} earns ${w} an hour and works {h} hours a day, {d} days a week. Every week {n} spends ${s} on food. "
             "How many dollars does {n} have left at the end of the week?", lambda s: s["w"] * s["h"] * s["d"] - s["s"]),
    "farm": ({"c": (3, 20), "h": (5, 30), "d": (1, 4)},
             "A farmer has {c} cows, {h} chickens and {d} dogs. How many legs do all the animals have together?",
             lambda s: 4 * s["c"] + 2 * s["h"] + 4 * s["d"]),
    "boxes": ({"a": [6, 8, 10, 12, 24], "x": (50, 300)},
              "Pencils are sold in boxes of {a}. A school needs {x} pencils for its students. What is the smallest "
              "number of boxes the school must buy?", lambda s: -(-s["x"] // s["a"])),
    "ages": ({"a": (5, 15), "b": (2, 9)},
             "{n} is {a} years old. {n}'s sister is {b} years older, and their mother is three times as old as the "
             "sister. How old is their mother?", lambda s: 3 * (s["a"] + s["b"])),
    "recipe": ({"s": [2, 3, 4], "a": (2, 5), "t": lambda s, r: s["s"] * r.randint(2, 5)},
               "A recipe needs {a} eggs for {s} servings. How many eggs are needed for {t} servings?",
               lambda s: s["a"] * s["t"] // s["s"]),
    "change": ({"q": (2, 6), "p": (2, 9), "e": (1, 4), "b": lambda s, r: 20 if s["q"] * s["p"] + s["e"] < 20 else 50},
               "{n} buys {q} notebooks at ${p} each and a pen for ${e}, and pays with a ${b} bill. How many dollars of "
               "change does {n} get?", lambda s: s["b"] - s["q"] * s["p"] - s["e"]),
}
STEP_SUFFIX = ["Think step by step, then give the final answer as a number.", "Solve it step by step.",
               "Show your reasoning briefly and end with \"Answer: <number>\".",
               "Explain your steps, then state the answer."]


def gen_word_problem(r, n):
    name = list(WORD_PROBLEMS)[n % len(WORD_PROBLEMS)]
    spec, text, answer = WORD_PROBLEMS[name]
    slots = draw({"n": NAMES, **spec}, r)
    return item(name, [user(f"{text.format(**slots)} {r.choice(STEP_SUFFIX)}")], 128, num(answer(slots)))


# --- code
CODE_FUNCS = [
    ("sum_loop", "def f(n):\n    total = 0\n    for i in range(1, n + 1):\n        total += i\n    return total",
     lambda r: r.randint(4, 30)),
    ("factorial", "def f(n):\n    result = 1\n    while n > 1:\n        result *= n\n        n -= 1\n    return result",
     lambda r: r.randint(3, 7)),
    ("fibonacci", "def f(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a",
     lambda r: r.randint(5, 15)),
    ("digit_sum", "def f(n):\n    return sum(int(d) for d in str(n))", lambda r: r.randint(100, 99999)),
    ("halvings", "def f(n):\n    steps = 0\n    while n > 1:\n        n //= 2\n        steps += 1\n    return steps",
     lambda r: r.randint(10, 1000)),
    ("spread", "def f(xs):\n    return max(xs) - min(xs)", lambda r: r.sample(range(1, 99), r.randint(4, 7))),
]
CODE_ASK = [
    "What does this Python function return for {arg}?\n\n```python\n{src}\n```\n\nAnswer with just the number.",
    "What does the following code print?\n\n```python\n{src}\n\nprint(f({arg}))\n```",
    "```python\n{src}\n```\n\nIf I call f({arg}), what is the result?",
]
CODE_OPEN = [
    ("fix_average", "Fix the bug in this function. It should return the average of a list of numbers.\n\n"
     "```python\ndef average(xs):\n    return sum(xs) / (len(xs) - 1)\n```"),
    ("write_function", "Write a Python function that {task}."),
    ("fix_is_even", "Fix the bug in this function:\n\n```python\ndef is_even(n):\n    return n % 2 == 1\n```"),
    ("explain_sql", "Explain what this SQL query does:\n\n```sql\nSELECT country, COUNT(*) AS customers\n"
     "FROM customers\nGROUP BY country\nORDER BY customers DESC\nLIMIT {k};\n```"),
    ("fix_max", "This function returns 0 for [-3, -7, -1] instead of -1. Why, and how do I fix it?\n\n"
     "```python\ndef largest(xs):\n    best = 0\n    for x in xs:\n        if x > best:\n            best = x\n"
     "    return best\n```"),
    ("fix_js_loop", "What is wrong with this JavaScript loop?\n\n```javascript\nfor (let i = 0; i <= items.length; i++) {{\n"
     "  console.log(items[i].name);\n}}\n```"),
]
WRITE_TASKS = ["checks whether a string is a palindrome", "returns the second largest number in a list",
               "counts how often each word appears in a sentence", "removes duplicates from a list but keeps the order",
               "converts a temperature from Celsius to Fahrenheit", "returns the n-th prime number"]


def gen_code(r, n):
    if n % 2 == 0:
        name, src, arg_of = CODE_FUNCS[(n // 2) % len(CODE_FUNCS)]
        arg = arg_of(r)
        scope: dict = {}
        exec(src, scope)  # our own snippet: the expected answer is what Python computes
        text = CODE_ASK[(n // 2) % len(CODE_ASK)].format(src=src, arg=repr(arg))
        return item(f"returns/{name}", [user(text)], 64, num(scope["f"](arg)))
    name, text = CODE_OPEN[(n // 2) % len(CODE_OPEN)]
    text = text.format(task=r.choice(WRITE_TASKS), k=r.randint(3, 10))
    ask = r.choice(["", "Explain briefly.", "Keep it short."] + ["Show only the corrected code."] * ("fix" in name))
    return item(name, [user(text + ("\n\n" if text.endswith("```") else " ") + ask if ask else text)], 128)


# --- multi-turn conversations (2 to 5 user turns; filler exchanges before the last question)
SMALL_TALK = [
    ("Can you recommend a good book?", "Sure! \"The Hobbit\" by J. R. R. Tolkien is a classic adventure many readers enjoy."),
    ("What's a good hobby for a rainy day?", "Reading, drawing or baking are all nice things to do indoors on a rainy day."),
    ("Thanks, that's helpful.", "You're welcome! Anything else?"),
    ("How do I make tea?", "Boil water, pour it over a tea bag, wait three to five minutes, then remove the bag."),
    ("Tell me a fun fact.", "Octopuses have three hearts and blue blood."),
    ("What should I cook tonight?", "How about a simple vegetable stir-fry with rice? It takes about twenty minutes."),
]
TOPICS = [
    ("Name the planets of the solar system.", "Mercury, Venus, Earth, Mars, Jupiter, Saturn, Uranus and Neptune.",
     "Which of them is the largest?", ["jupiter"]),
    ("Name the oceans of the world.", "The Pacific, Atlantic, Indian, Southern and Arctic oceans.",
     "Which one is the largest?", ["pacific"]),
    ("What are the four seasons?", "Spring, summer, autumn and winter.", "Which season comes after summer?",
     ["autumn", "fall"]),
    ("Name three big cats.", "Lions, tigers and leopards.", "Which of them has stripes?", ["tiger", "tigers"]),
    ("What are the three states of water?", "Solid (ice), liquid (water) and gas (steam or water vapour).",
     "What is the solid one called?", ["ice"]),
]
DESCRIBE = [("a lighthouse", "A lighthouse stands on the rocky shore, sweeping its light across the dark sea."),
            ("a morning market", "The morning market is full of colour, noise and the smell of fresh bread."),
            ("an old bicycle", "The old bicycle leans against the wall, its red paint faded by years of sun."),
            ("a mountain lake", "The mountain lake lies perfectly still, reflecting the snowy peaks around it.")]
ITEMS = ["apples", "milk", "bread", "eggs", "rice", "coffee", "tomatoes", "cheese", "soap", "onions"]


def mt_memory(r):
    name, city = r.choice(NAMES), r.choice(CITIES)
    head = [(f"Hi! My name is {name} and I live in {city}.", f"Nice to meet you, {name}! {city} sounds lovely.")]
    if r.random() < 0.5:
        return head, "By the way, what is my name?", has(name), 1
    return head, "Which city did I say I live in?", has(city), 1


def mt_arith(r):
    a, b, c, d = r.randint(10, 60), r.randint(10, 60), r.randint(2, 5), r.randint(1, 20)
    head = [(f"What is {a} + {b}?", f"{a} + {b} = {a + b}.")]
    if r.random() < 0.5:
        return head, f"Now multiply that by {c}.", num((a + b) * c), 0
    head.append((f"Now multiply that by {c}.", f"{a + b} × {c} = {(a + b) * c}."))
    return head, f"And subtract {d} from the result.", num((a + b) * c - d), 0


def mt_list(r):
    xs = r.sample(ITEMS, r.randint(3, 5))
    head = [(f"I'm making a shopping list. Please add {xs[0]} and {xs[1]}.", f"Done. Your list: {xs[0]}, {xs[1]}.")]
    for k in range(2, len(xs)):
        head.append((f"Also add {xs[k]}.", f"Added. Your list: {', '.join(xs[:k + 1])}."))
    return head, "How many items are on my list now? Answer with a number.", num(len(xs)), 0


def mt_topic(r):
    q, a, follow, answers = r.choice(TOPICS)
    return [(q, a)], follow, has(*answers), 0


def mt_rewrite(r):
    thing, sentence = r.choice(DESCRIBE)
    head = [(f"Write one sentence describing {thing}.", sentence)]
    last = r.choice(["Make it more formal.", "Now make it funny.", "Rewrite it for a five-year-old.",
                     "Make it shorter."])
    return head, last, None, 0


def mt_celsius(r):
    c = r.choice(range(150, 255, 5))
    head = [("I live in Europe, so please use Celsius from now on.", "Of course, I'll use degrees Celsius.")]
    return head, f"My recipe says to bake at {c * 9 // 5 + 32} °F. What is that in Celsius? Answer with just the number.", num(c), 1


MULTI_TURN = [mt_memory, mt_arith, mt_list, mt_topic, mt_rewrite, mt_celsius]


def gen_multi_turn(r, n):
    fn = MULTI_TURN[n % len(MULTI_TURN)]
    head, last, check, at = fn(r)
    fillers = r.sample(SMALL_TALK, r.randint(0, 4 - len(head)))  # 2 to 5 user turns in all
    exchanges = head[:at] + fillers + head[at:]
    messages = [m for u, a in exchanges for m in (user(u), {"role": "assistant", "content": a})] + [user(last)]
    return item(fn.__name__, messages, 96 if check is None else 64, check)


# --- a system prompt + a question
SYSTEMS = ["You are a helpful assistant. Answer in one short sentence.",
           "You are a friendly tutor for primary school children. Keep explanations simple.",
           "You are a pirate. Stay in character, but answer the question correctly.",
           "You are a concise assistant. Reply with as few words as possible.",
           "You are the support assistant of PageTurner, an online bookstore. Be polite and brief."]
SYSTEM_QUESTIONS = [
    ("What is the capital of Italy?", has("rome")), ("How many continents are there?", num(7)),
    ("What gas do plants take in from the air?", has("carbon dioxide", "co2")),
    ("Who painted the Mona Lisa?", has("leonardo", "da vinci")),
    ("At what temperature in Celsius does water boil at sea level?", num(100)),
    ("Can you recommend a book for a long flight?", None), ("How do I return a book I ordered?", None),
    ("Why do leaves change colour in autumn?", None), ("Tell me something interesting about the moon.", None),
]


def gen_system(r, n):
    system = SYSTEMS[n % len(SYSTEMS)]
    if r.random() < 0.3:
        a, b = r.randint(3, 19), r.randint(3, 19)
        q, check = f"What is {a} times {b}?", num(a * b)
    else:
        q, check = r.choice(SYSTEM_QUESTIONS)
    return item(f"system {n % len(SYSTEMS)}", [{"role": "system", "content": system}, user(q)], 64, check)


# --- answers in a JSON schema (response_format)


def schema(name: str, properties: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": name, "strict": True, "schema": {
        "type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}}}


JOBS = ["nurse", "teacher", "carpenter", "pilot", "chef", "software developer", "librarian", "farmer"]
PERSON_TEXT = ["{name} is {age} years old and works as a {job} in {city}.",
               "Meet {name}, a {age}-year-old {job} from {city}.",
               "Our new colleague {name} turned {age} last month; before joining us, {name} was a {job} in {city}."]
REVIEWS = [("The battery lasts two full days and the screen is gorgeous.", "positive"),
           ("It stopped working after a week and support never answered.", "negative"),
           ("The package arrived on Tuesday as scheduled.", "neutral"),
           ("Honestly the best pizza I have had in years.", "positive"),
           ("The hotel room was dirty and smelled of smoke.", "negative"),
           ("The manual has twelve pages and comes in three languages.", "neutral")]
NOVELS = [("Nineteen Eighty-Four", 1949), ("Pride and Prejudice", 1813), ("Moby-Dick", 1851),
          ("The Great Gatsby", 1925)]
GOODS = ["notebooks", "pens", "coffee mugs", "USB cables", "umbrellas", "candles"]


def gen_json_schema(r, n):
    kind = ["person", "person", "contact", "location", "sentiment", "person", "order", "sentiment",
            "contact", "location", "json_object"][n % 11]
    name = r.choice(NAMES)
    if kind == "person":
        age = r.randint(19, 78)
        text = r.choice(PERSON_TEXT).format(name=name, age=age, job=r.choice(JOBS), city=r.choice(CITIES))
        return item(kind, [user(f"Extract the person's name and age from this text: \"{text}\"")], 64, num(age),
                    response_format=schema("person", {"name": {"type": "string"}, "age": {"type": "integer"}}))
    if kind == "contact":
        surname = r.choice(["Novak", "Okafor", "Lindqvist", "Moreau", "Tanaka", "Silva"])
        email = f"{name.lower()}.{surname.lower()}@{r.choice(['example.com', 'example.org'])}"
        text = (f"{name} {surname}\n{r.choice(JOBS).title()}, Brightside Ltd.\n{email}\n"
                f"Tel. +44 20 {r.randint(1000, 9999)} {r.randint(1000, 9999)}")
        return item(kind, [user(f"Extract the contact details from this email signature:\n\n{text}")], 64, has(email),
                    response_format=schema("contact", {"name": {"type": "string"}, "email": {"type": "string"},
                                                       "phone": {"type": "string"}}))
    if kind == "location":
        city = r.choice(CITIES)
        text = r.choice([f"The conference opened on a rainy morning in {city}, and by noon the hall was full.",
                         f"{name} missed the last ferry and spent the night walking through the old streets of {city}.",
                         f"Our team moved its office to {city} last spring, close to the harbour."])
        return item(kind, [user(f"Where does this take place? Text: \"{text}\" Give the city and the country.")],
                    64, has(city), response_format=schema("place", {"city": {"type": "string"},
                                                                    "country": {"type": "string"}}))
    if kind == "sentiment":
        text, label = r.choice(REVIEWS)
        labels = ["positive", "negative", "neutral"]
        return item(kind, [user(f"Classify the sentiment of this review: \"{text}\"")], 48,
                    {"kind": "label", "answers": [label], "labels": labels},
                    response_format=schema("sentiment", {"sentiment": {"type": "string", "enum": labels},
                                                         "confidence": {"type": "number"}}))
    if kind == "order":
        (g1, g2), q1, q2, p1, p2 = r.sample(GOODS, 2), r.randint(2, 9), r.randint(2, 9), r.randint(2, 15), r.randint(2, 15)
        line = schema("line", {"name": {"type": "string"}, "quantity": {"type": "integer"},
                               "unit_price": {"type": "number"}})["json_schema"]["schema"]
        return item(kind, [user(f"Turn this order into JSON, with the total price: {q1} {g1} at ${p1} each and "
                                f"{q2} {g2} at ${p2} each.")], 96, num(q1 * p1 + q2 * p2),
                    response_format=schema("order", {"items": {"type": "array", "items": line},
                                                     "total": {"type": "number"}}))
    title, year = r.choice(NOVELS)
    return item(kind, [user(f"Reply with a JSON object with the keys \"title\" and \"year\" (first published) "
                            f"for the novel {title}.")], 48, num(year), response_format={"type": "json_object"})


# --- tools offered


def tool(name: str, description: str, properties: dict, required: list[str]) -> dict:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": properties, "required": required}}}


WEATHER = tool("get_weather", "Get the current weather for a city.",
               {"city": {"type": "string", "description": "City name, e.g. Paris"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, ["city"])
CALCULATOR = tool("calculator", "Evaluate an arithmetic expression and return the result.",
                  {"expression": {"type": "string", "description": "e.g. 12 * (3 + 4)"}}, ["expression"])
GET_TIME = tool("get_time", "Get the current local time in a city.", {"city": {"type": "string"}}, ["city"])
SEARCH = tool("search_web", "Search the web and return the top results.", {"query": {"type": "string"}}, ["query"])


def call(r, name: str, args: dict) -> tuple[str, dict]:
    cid = f"call_{r.randrange(16 ** 8):08x}"
    return cid, {"role": "assistant", "content": None, "tool_calls": [
        {"id": cid, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}]}


def gen_tools(r, n):
    """Tools offered: the one a call is expected for, with 0-3 others, in a random order."""
    kind, city = n % 4, r.choice(CITIES)
    needed = {0: WEATHER, 1: CALCULATOR}.get(kind) or r.choice([WEATHER, CALCULATOR])
    tools = [t for t in (WEATHER, CALCULATOR, GET_TIME, SEARCH) if t is not needed and r.random() < 0.4]
    tools.insert(r.randrange(len(tools) + 1), needed)
    extra = {"tools": tools, "tool_choice": "auto"}
    a, b, c = r.randint(120, 999), r.randint(12, 99), r.randint(100, 9999)
    if kind == 0:
        q = r.choice([f"What's the weather like in {city} right now?", f"Do I need an umbrella in {city} today?",
                      f"How warm is it in {city} at the moment, in fahrenheit?"])
        return item("weather_call", [user(q)], 64, {"kind": "tool", "answers": ["get_weather"]}, **extra)
    if kind == 1:
        q = r.choice([f"Use the calculator to work out {a} * {b} + {c}.", f"What is {b}% of {c}? Use the calculator.",
                      f"Compute ({c} - {a}) / {b} for me."])
        return item("calculator_call", [user(q)], 64, {"kind": "tool", "answers": ["calculator"]}, **extra)
    if kind == 2 and needed is WEATHER:
        t, cond = r.randint(-5, 34), r.choice(["sunny", "cloudy", "light rain", "windy"])
        cid, m = call(r, "get_weather", {"city": city})
        result = json.dumps({"city": city, "temperature_c": t, "condition": cond})
        msgs = [user(f"What's the weather in {city}?"), m, {"role": "tool", "tool_call_id": cid, "content": result}]
        return item("weather_result", msgs, 64, num(t), **extra)
    if kind == 2:
        cid, m = call(r, "calculator", {"expression": f"{a} * {b} + {c}"})
        msgs = [user(f"What is {a} * {b} + {c}?"), m, {"role": "tool", "tool_call_id": cid, "content": str(a * b + c)}]
        return item("calculator_result", msgs, 64, num(a * b + c), **extra)
    q = r.choice(["Translate 'thank you very much' into German.", "Write a one-line greeting for a birthday card.",
                  "What is a synonym for 'happy'?", "Tell me a short joke about computers.",
                  "Summarize in one sentence why sleep matters."])
    return item("no_tool_needed", [user(q)], 64, None, **extra)


# --- "explain step by step"
CLAIMS = ["the sum of two odd numbers is always even", "ice floats on water", "we see lightning before we hear thunder",
          "there is a leap day every four years", "metal feels colder than wood at the same temperature"]
COMPARE = [("trains", "planes", "a 500 km trip"), ("Python", "JavaScript", "a beginner who wants to build websites"),
           ("renting", "buying a home", "someone who moves every two years"), ("e-books", "paper books", "a holiday")]
HOWTO = ["plant a tomato seedling", "change a flat bicycle tyre", "make pour-over coffee",
         "back up the photos on a phone", "prepare for a job interview"]


def gen_step_by_step(r, n):
    kind = n % 5
    if kind == 0:
        c = r.choice(range(5, 100, 5))
        return item("celsius", [user(f"Explain step by step how to convert {c} degrees Celsius to Fahrenheit.")],
                    128, num(c * 9 // 5 + 32))
    if kind == 1:
        p, x = r.choice([5, 10, 15, 20, 25, 30, 40]), r.choice(range(20, 500, 20))
        return item("percent", [user(f"Explain step by step how to find {p}% of {x}.")], 128, num(p * x // 100))
    if kind == 2:
        return item("why", [user(f"Explain step by step why {r.choice(CLAIMS)}.")], 128)
    if kind == 3:
        a, b, use = r.choice(COMPARE)
        return item("compare", [user(f"Compare {a} and {b}, then say which one you would recommend for {use} and why.")], 128)
    return item("howto", [user(f"List the steps to {r.choice(HOWTO)}. Number each step.")], 128)


# --- non-Latin scripts: arithmetic, a numeric fact, translation into English, open writing
NON_LATIN = {
    "ru": {"plus": "Сколько будет {a} плюс {b}? Ответьте только числом.",
           "times": "Сколько будет {a} умножить на {b}? Ответьте только числом.",
           "facts": [("Сколько дней в неделе?", 7), ("Сколько месяцев в году?", 12), ("Сколько ног у паука?", 8),
                     ("Сколько часов в сутках?", 24)],
           "translate": "Переведите на английский: «{s}»",
           "sentences": [("У меня есть собака.", ["dog"]), ("Сегодня очень холодно.", ["cold"]),
                         ("Где находится вокзал?", ["station"]), ("Мой брат работает врачом.", ["doctor"])],
           "write": ["Напишите короткое стихотворение о зиме.", "Опишите Москву в двух предложениях."]},
    "el": {"plus": "Πόσο κάνει {a} συν {b}; Απάντησε μόνο με τον αριθμό.",
           "times": "Πόσο κάνει {a} επί {b}; Απάντησε μόνο με τον αριθμό.",
           "facts": [("Πόσες μέρες έχει μια εβδομάδα;", 7), ("Πόσους μήνες έχει ένας χρόνος;", 12),
                     ("Πόσα πόδια έχει μια αράχνη;", 8), ("Πόσες ώρες έχει μια μέρα;", 24)],
           "translate": "Μετάφρασε στα αγγλικά: «{s}»",
           "sentences": [("Ο σκύλος μου είναι μεγάλος.", ["dog"]), ("Μου αρέσει ο καφές.", ["coffee"]),
                         ("Το βιβλίο είναι στο τραπέζι.", ["book"]), ("Η θάλασσα είναι ήρεμη σήμερα.", ["sea"])],
           "write": ["Γράψε ένα σύντομο ποίημα για τη θάλασσα.", "Περίγραψε την Αθήνα σε δύο προτάσεις."]},
    "zh": {"plus": "{a}加{b}等于多少？只回答数字。", "times": "{a}乘以{b}等于多少？只回答数字。",
           "facts": [("一个星期有几天？", 7), ("一年有几个月？", 12), ("蜘蛛有几条腿？", 8), ("一天有多少个小时？", 24)],
           "translate": "请把这句话翻译成英文：“{s}”",
           "sentences": [("我每天早上喝茶。", ["tea"]), ("我的猫很喜欢睡觉。", ["cat"]), ("明天会下雨。", ["rain"]),
                         ("这本书很有意思。", ["book"])],
           "write": ["写一首关于春天的短诗。", "用两句话介绍一下长城。"]},
    "ar": {"plus": "كم يساوي {a} زائد {b}؟ أجب بالرقم فقط.", "times": "كم يساوي {a} ضرب {b}؟ أجب بالرقم فقط.",
           "facts": [("كم يومًا في الأسبوع؟", 7), ("كم شهرًا في السنة؟", 12), ("كم ساعة في اليوم؟", 24),
                     ("كم دقيقة في الساعة؟", 60)],
           "translate": "ترجم إلى الإنجليزية: «{s}»",
           "sentences": [("البيت كبير وجميل.", ["house", "home"]), ("أخي يعمل في المستشفى.", ["hospital"]),
                         ("الشمس حارة اليوم.", ["sun"]), ("أحب القراءة في المساء.", ["reading", "read"])],
           "write": ["اكتب قصيدة قصيرة عن الصحراء.", "صف مدينة القاهرة في جملتين."]},
    "hi": {"plus": "{a} और {b} का जोड़ कितना है? केवल संख्या में उत्तर दें।",
           "times": "{a} गुणा {b} कितना होता है? केवल संख्या में उत्तर दें।",
           "facts": [("एक सप्ताह में कितने दिन होते हैं?", 7), ("एक साल में कितने महीने होते हैं?", 12),
                     ("मकड़ी के कितने पैर होते हैं?", 8), ("एक दिन में कितने घंटे होते हैं?", 24)],
           "translate": "इसे अंग्रेज़ी में अनुवाद करें: “{s}”",
           "sentences": [("मुझे आम बहुत पसंद हैं।", ["mango", "mangoes"]), ("आज बहुत गर्मी है।", ["hot"]),
                         ("मेरी बहन डॉक्टर है।", ["doctor"]), ("ट्रेन देर से आई।", ["train"])],
           "write": ["बारिश के बारे में एक छोटी कविता लिखिए।", "दिल्ली के बारे में दो वाक्य लिखिए।"]},
}


def gen_non_latin(r, n):
    lang = list(NON_LATIN)[n % len(NON_LATIN)]
    t, kind = NON_LATIN[lang], (n // len(NON_LATIN)) % 4
    if kind == 0:
        a, b = r.randint(11, 89), r.randint(3, 12)
        if r.random() < 0.5:
            return item(f"{lang}/plus", [user(t["plus"].format(a=a, b=b))], 32, num(a + b))
        return item(f"{lang}/times", [user(t["times"].format(a=a, b=b))], 32, num(a * b))
    if kind == 1:
        q, answer = r.choice(t["facts"])
        return item(f"{lang}/fact", [user(q)], 32, num(answer))
    if kind == 2:
        s, answers = r.choice(t["sentences"])
        return item(f"{lang}/translate", [user(t["translate"].format(s=s))], 48, has(*answers))
    return item(f"{lang}/write", [user(r.choice(t["write"]))], 96)


# --- long inputs: meeting notes, a price table, an email
TASKS_TODO = ["book the venue", "send the invitations", "update the budget", "order the catering",
              "test the projector", "write the press release", "collect the feedback forms", "renew the domain name"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
PRODUCTS = ["desk lamp", "office chair", "bookshelf", "monitor stand", "keyboard", "headset", "webcam", "mouse pad"]


def gen_long_context(r, n):
    kind = n % 3
    if kind == 0:
        people, todo = r.sample(NAMES, 6), r.sample(TASKS_TODO, 6)
        days = [r.choice(WEEKDAYS) for _ in people]
        lines = "\n".join(f"- {p} will {t} by {d}." for p, t, d in zip(people, todo, days))
        text = (f"Notes from the planning meeting for the spring open day, held on {r.choice(WEEKDAYS)}. "
                f"Everyone agreed that last year's event ran too long, so this year it ends at 4 pm. The budget "
                f"stays the same as last year. Action items:\n\n{lines}\n\nThe next meeting is in two weeks.")
        k = r.randrange(6)
        if r.random() < 0.6:
            return item("meeting/who", [user(f"{text}\n\nWho will {todo[k]}?")], 48, has(people[k]))
        return item("meeting/when", [user(f"{text}\n\nBy which day must {people[k]} {todo[k]}?")], 48, has(days[k]))
    if kind == 1:
        goods = r.sample(PRODUCTS, 6)
        prices = r.sample(range(9, 250), 6)
        stock = [r.randint(0, 80) for _ in goods]
        rows = "\n".join(f"| {g} | {p} | {s} |" for g, p, s in zip(goods, prices, stock))
        table = f"Here is our current price list:\n\n| Product | Price (USD) | In stock |\n|---|---|---|\n{rows}\n\n"
        k = r.randrange(6)
        ask = r.choice(["cheapest", "stock", "price"])
        if ask == "cheapest":
            return item("table/cheapest", [user(table + "Which product is the cheapest?")], 48,
                        has(goods[prices.index(min(prices))]))
        if ask == "stock":
            return item("table/stock", [user(table + f"How many units of the {goods[k]} are in stock?")], 48, num(stock[k]))
        return item("table/price", [user(table + f"How much does the {goods[k]} cost?")], 48, num(prices[k]))
    room, speaker = f"Room {r.randint(1, 4)}{r.randint(0, 2)}{r.randint(1, 9)}", f"Dr. {r.choice(NAMES)} {r.choice(['Novak', 'Okafor', 'Moreau', 'Tanaka'])}"
    day, start = r.choice(WEEKDAYS), f"{r.randint(9, 15)}:{r.choice(['00', '15', '30', '45'])}"
    email = (f"Subject: Data workshop next week\n\nHello everyone,\n\nAs announced in the newsletter, our department "
             f"is running a hands-on workshop on cleaning and visualising data. It takes place on {day} in {room}, "
             f"starting at {start} and lasting about three hours, with a short coffee break in the middle. "
             f"{speaker} will give the opening talk and then guide the exercises. Please bring a laptop with a "
             f"spreadsheet program installed; the example files will be shared on the day. Places are limited to "
             f"twenty people, so reply to this email within three days if you want to join. Lunch is not provided, but the "
             f"cafeteria on the ground floor is open until 2 pm.\n\nBest regards,\nThe organising team")
    q, check = r.choice([("In which room is the workshop?", has(room)), ("Who gives the opening talk?", has(speaker.split()[-1])),
                         ("What time does the workshop start?", has(start)), ("On which day is the workshop?", has(day))])
    return item("email", [user(f"{email}\n\n{q}")], 48, check)


# --- open-ended short writing (no check: "acceptable" = same as the most precise tier)
WRITING = [("haiku", "Write a haiku about {topic}.", 48), ("limerick", "Write a limerick about a {animal} who {activity}.", 96),
           ("tweet", "Write a tweet announcing {event}.", 64),
           ("product", "Write a two-sentence product description for {product}.", 64),
           ("email", "Write a short email to {recipient} asking {request}.", 128),
           ("story", "Write the opening paragraph of a story about {story}.", 128),
           ("slogan", "Suggest a slogan for {business}.", 32), ("poem", "Write a four-line poem about {topic}.", 64)]
SLOTS = {"topic": ["rivers", "the first snow", "city lights at night", "a quiet library", "the ocean at dawn", "autumn wind"],
         "animal": ["cat", "goat", "penguin", "frog"], "activity": ["learned to ski", "opened a bakery", "hated Mondays"],
         "event": ["a new bakery on Main Street", "a free coding workshop", "a charity fun run"],
         "product": ["a reusable water bottle", "noise-cancelling headphones", "a bamboo toothbrush"],
         "recipient": ["your landlord", "a colleague", "your child's teacher"],
         "request": ["to fix the heating", "for help with a report", "for a meeting next week"],
         "story": ["a lost key", "a lighthouse keeper", "a robot who learns to paint"],
         "business": ["a bicycle repair shop", "a vegan café", "a dog-walking service"]}


def gen_writing(r, n):
    name, text, max_tokens = WRITING[n % len(WRITING)]
    return item(name, [user(text.format(**{k: r.choice(v) for k, v in SLOTS.items()}))], max_tokens)


# category: (generator, count)
GENERATORS = {
    "word_problem": (gen_word_problem, 25), "code": (gen_code, 24), "multi_turn": (gen_multi_turn, 24),
    "system": (gen_system, 16), "json_schema": (gen_json_schema, 20), "tools": (gen_tools, 20),
    "step_by_step": (gen_step_by_step, 15), "non_latin": (gen_non_latin, 20), "long_context": (gen_long_context, 12),
    "writing": (gen_writing, 16),
}


# ---------------------------------------------------------------------------------------
# SmolLM2-135M-Instruct


def smollm2_lines() -> list[dict]:
    out = []
    for raw in TASKS.read_text().splitlines():
        t = json.loads(raw)
        check = {"kind": t["check"], "answers": t["answers"]}
        if "labels" in t:
            check["labels"] = t["labels"]
        out.append({"id": t["id"], "source": str(TASKS.relative_to(ROOT)), "category": t["category"],
                    "request": {"messages": [{"role": "user", "content": t["prompt"]}],
                                "max_tokens": TASK_MAX_TOKENS[t["category"]]},
                    "check": check})
    rng = random.Random(SEED)
    for name, (gen, count) in GENERATORS.items():
        seen = set()
        n = tries = 0
        while n < count:
            tries += 1
            assert tries < 10 * count, f"{name}: too few distinct prompts"
            made = gen(rng, n)
            fingerprint = json.dumps(made["request"], sort_keys=True)
            if fingerprint in seen:
                continue
            seen.add(fingerprint)
            n += 1
            line = {"id": f"{name}-{n:03d}",
                    "source": f"tools/route/make_prompts.py ({name}: {made['template']})", "category": name,
                    "request": made["request"]}
            if made["check"]:
                line["check"] = made["check"]
            out.append(line)
    return out


# ---------------------------------------------------------------------------------------
# sluice-tiny


TINY_CATEGORY = {"calculator": "calculator", "sql_query": "sql", "current_time": "time"}


def tiny_lines() -> tuple[list[dict], list[dict]]:
    """(train, held-out) cases of a seeded sample of training/data.py's held-out conversations;
    conversations are split per (kind, held-out reason), a conversation's turns stay together."""
    sys.path.insert(0, str(ROOT / "loadtest"))
    import structured_eval  # noqa: PLC0415  (loadtest/structured_eval.py)

    evaluate, data = structured_eval.import_training()
    _, held_out = data.split()  # the seed and sizes `make model` uses
    rng = random.Random(SEED + 1)
    strata: dict[str, list[int]] = defaultdict(list)
    for i, conv in enumerate(held_out):
        strata[f"{conv['kind']}/{conv['heldout']}"].append(i)
    chosen = [{"conv": i, "stratum": k, "intent": held_out[i]["intent"]} for k in sorted(strata)
              for i in sorted(rng.sample(strata[k], round(len(strata[k]) * TINY_SHARE)))]
    train = {d["conv"] for d in split(chosen, lambda d: d["stratum"], lambda d: d["intent"], SEED + 2)[0]}
    out: tuple[list[dict], list[dict]] = ([], [])
    numbers: Counter = Counter()
    for i in sorted(d["conv"] for d in chosen):
        conv = held_out[i]
        for kind, prefix, tools, expected, _group in evaluate.cases([conv]):
            request = {"messages": structured_eval.request_messages(prefix)}
            if tools:
                request.update(tools=tools, tool_choice="auto")
            request["max_tokens"] = TINY_MAX_TOKENS
            check = None  # "direct": evaluate.py's rule (no tool call) has no check kind
            if kind == "call":
                cat, check = TINY_CATEGORY[expected["name"]] + "_call", {"kind": "tool", "answers": [expected["name"]]}
            elif kind == "answer":
                called = next(m for m in reversed(prefix) if m.get("tool_calls"))["tool_calls"][0]["function"]["name"]
                cat, check = TINY_CATEGORY[called] + "_answer", {"kind": "contains", "answers": [expected]}
            else:
                cat = "direct"
            numbers[cat] += 1
            line = {"id": f"{cat}-{numbers[cat]:03d}",
                    "source": f"training/data.py split() held-out conversation {i} "
                              f"({conv['kind']}/{conv['intent']}, {conv['heldout']}), turn {len(prefix)}",
                    "category": cat,
                    "request": request}
            if check:
                line["check"] = check
            out[i not in train].append(line)
    _check_context(out[0] + out[1])
    return out


def _check_context(lines: list[dict]) -> None:
    """With `tokenizers` installed: every prompt + max_tokens fits sluice-tiny's context."""
    try:
        from tokenizers import Tokenizer  # noqa: PLC0415
    except ImportError:
        return
    from common import MODEL_DIR, render  # noqa: PLC0415  (training/common.py)

    tok = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    for l in lines:
        ids = tok.encode(render(l["request"]["messages"], l["request"].get("tools"), add_generation_prompt=True)).ids
        assert len(ids) + l["request"]["max_tokens"] <= TINY_CONTEXT, (l["id"], len(ids))


# ---------------------------------------------------------------------------------------
# validation


def validate(line: dict, max_tokens: int) -> None:
    """Raise ValueError unless `line` is a well-formed prompt line (see the module doc)."""
    def need(cond, what: str) -> None:
        if not cond:
            raise ValueError(f"{line.get('id', '?')}: {what}")

    need({"id", "source", "category", "request"} <= set(line) <= {"id", "source", "category", "request", "check"}
         and line["source"] and line["id"].startswith(line["category"] + "-"), "fields")
    r = line["request"]
    need(set(r) <= {"messages", "tools", "tool_choice", "response_format", "max_tokens"}, "request fields")
    need(isinstance(r.get("max_tokens"), int) and 1 <= r["max_tokens"] <= max_tokens, "max_tokens")
    msgs, names = r.get("messages"), {t["function"]["name"] for t in r.get("tools", [])}
    need(isinstance(msgs, list) and msgs and msgs[-1]["role"] in ("user", "tool"), "messages end with user or tool")
    need(msgs[1 if msgs[0]["role"] == "system" else 0]["role"] == "user", "the first turn is the user's")
    pending: set[str] = set()  # ids of tool calls not answered yet
    for j, m in enumerate(msgs):
        role, content = m.get("role"), m.get("content")
        need(role in ROLES, f"message {j}: role")
        need(role == "tool" or not pending, f"message {j}: tool calls left unanswered")
        if role == "tool":
            need(m.get("tool_call_id") in pending and isinstance(content, str), f"message {j}: result without its call")
            pending.discard(m["tool_call_id"])
        elif role == "assistant" and m.get("tool_calls"):
            for c in m["tool_calls"]:
                f = c["function"]
                need(c["type"] == "function" and c["id"] not in pending and f["name"] in names, f"message {j}: call")
                need(isinstance(json.loads(f["arguments"]), dict), f"message {j}: arguments, a JSON object string")
                pending.add(c["id"])
        else:
            need(isinstance(content, str) and content.strip(), f"message {j}: content")
            need(role != "system" or j == 0, f"message {j}: system prompt not first")
    need(not pending, "tool calls left unanswered")
    for t in r.get("tools", []):
        need(t["type"] == "function" and t["function"]["parameters"]["type"] == "object", "tool definition")
    need(("tools" in r) == ("tool_choice" in r) and r.get("tool_choice", "auto") == "auto", "tools with tool_choice auto")
    rf = r.get("response_format", {"type": "json_object"})
    need(rf["type"] == "json_object" or rf["type"] == "json_schema" and rf["json_schema"]["name"] and
         rf["json_schema"]["schema"]["type"] == "object", "response_format")
    c = line.get("check")
    if c is not None:
        need(c.get("kind") in CHECK_KINDS and set(c) <= {"kind", "answers", "labels"}, "check kind and fields")
        need(isinstance(c.get("answers"), list) and c["answers"] and
             all(isinstance(a, str) and a.strip() for a in c["answers"]), "check answers")
        need((c["kind"] == "label") == ("labels" in c), "labels exactly with kind label")
        need(c["kind"] not in ("label", "tool") or len(c["answers"]) == 1, "one answer for label and tool")
        need(c["kind"] != "label" or c["answers"][0] in c["labels"], "label answer among the labels")
        need(c["kind"] != "tool" or c["answers"][0] in names, "tool check names an offered tool")
        need(c["kind"] != "number" or all(re.fullmatch(r"-?\d+(\.\d+)?", a) for a in c["answers"]), "numbers")


# ---------------------------------------------------------------------------------------
# output


def write(name: str, lines: list[dict], max_tokens: int) -> None:
    """Validate, write, and print the counts (the README's table comes from this output)."""
    assert len({l["id"] for l in lines}) == len(lines), f"{name}: duplicate ids"
    for line in lines:
        validate(line, max_tokens)
    (OUT / name).write_text("".join(json.dumps(l, ensure_ascii=False) + "\n" for l in lines), encoding="utf-8")
    cats = Counter(category(l) for l in lines)
    print(f"{name}: {len(lines)} lines, {sum('check' in l for l in lines)} checked, max_tokens "
          f"{sum(l['request']['max_tokens'] for l in lines)}: " + ", ".join(f"{k} {v}" for k, v in sorted(cats.items())))


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    smol_train, smol_held = split(smollm2_lines(), category, lambda l: l["source"], SEED)
    tiny_train, tiny_held = tiny_lines()
    for name, lines, limit in (("smollm2-135m.train", smol_train, 128), ("smollm2-135m.heldout", smol_held, 128),
                               ("sluice-tiny.train", tiny_train, TINY_MAX_TOKENS),
                               ("sluice-tiny.heldout", tiny_held, TINY_MAX_TOKENS)):
        write(f"{name}.jsonl", lines, limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
