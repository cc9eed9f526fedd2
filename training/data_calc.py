"""Arithmetic questions answered through the `calculator` tool (gen_calculator), and
`calc`, the reference evaluator that prints numbers the way the calculator tool does."""

from __future__ import annotations

import ast
import operator
import random

from data_question import Q, _pick

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _eval(node):
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_eval(node.left), _eval(node.right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_eval(node.operand)
    raise ValueError("unsupported expression")


def format_number(v) -> str:
    """How the calculator tool prints a number: integers plainly, otherwise rounded to
    6 decimals with trailing zeros removed."""
    if isinstance(v, int):
        return str(v)
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    s = f"{v:.6f}".rstrip("0").rstrip(".")
    return "0" if s == "-0" else s


def calc(expression: str) -> str:
    """Evaluate an arithmetic expression (+ - * / parentheses) as the calculator tool does."""
    return format_number(_eval(ast.parse(expression, mode="eval")))


def _int(rng, hi=None):
    hi = hi or rng.choice([10, 20, 50, 100, 100, 1000, 1000, 10000])
    return rng.randint(1, hi)


def _dec(rng):
    return str(round(rng.uniform(0.1, 100), rng.choice([1, 1, 2])))


def _num(rng):
    return _dec(rng) if rng.random() < 0.2 else str(_int(rng))


SYM = {"+": ["+"], "-": ["-"], "*": ["*", "*", "x", "times"], "/": ["/", "/", "divided by"]}
WORD = {"+": "plus", "-": "minus", "*": "times", "/": "divided by"}

# phrasings of "a OP b" with the operator written as symbol/word ({op})
BIN_PHRASINGS = [
    "What is {a} {op} {b}?",
    "What's {a} {op} {b}?",
    "Calculate {a} {op} {b}.",
    "How much is {a} {op} {b}?",
    "Compute {a} {op} {b}",
    "{a} {op} {b} = ?",
    "Can you work out {a} {op} {b}?",
    "Please calculate {a} {op} {b}.",
]
# phrasings tied to one operator
OP_PHRASINGS = {
    "+": ["Add {a} and {b}.", "What is the sum of {a} and {b}?", "What do you get if you add {a} to {b}?",
          "Sum {a} and {b}."],
    "-": ["Subtract {b} from {a}.", "What is {a} take away {b}?", "What do you get if you subtract {b} from {a}?",
          "Take {b} away from {a}."],
    "*": ["Multiply {a} by {b}.", "What is the product of {a} and {b}?", "What do you get if you multiply {a} by {b}?",
          "Multiply {a} and {b}."],
    "/": ["Divide {a} by {b}.", "What is {a} over {b}?", "What do you get if you divide {a} by {b}?",
          "Split {a} into {b} equal parts. How big is each?"],
}
PCT_PHRASINGS = ["What is {p}% of {x}?", "Calculate {p}% of {x}.", "How much is {p} percent of {x}?",
                 "What's {p}% of {x}?", "Find {p} percent of {x}."]
TRI_PHRASINGS = ["What is {e}?", "Calculate {e}.", "Compute {e}", "How much is {e}?", "Evaluate {e}."]
SQUARE_PHRASINGS = ["What is {a} squared?", "What is the square of {a}?", "Square {a}."]

CALC_ANSWERS = ["{e} = {r}.", "{e} = {r}.", "The answer is {r}.", "It's {r}.", "The result is {r}.", "{r}"]
PCT_ANSWERS = ["{p}% of {x} is {r}.", "It's {r}.", "The answer is {r}."]


def gen_calculator(rng: random.Random) -> Q:
    r = rng.random()
    if r < 0.45:
        op = rng.choice("+-*/")
        a, b = _num(rng), _num(rng)
        if op == "*" and rng.random() < 0.6:
            a, b = str(_int(rng, 100)), str(_int(rng, rng.choice([12, 50, 100])))
        i, ph = _pick(rng, BIN_PHRASINGS)
        sym = rng.choice(SYM[op] + [WORD[op]])
        user = ph.format(a=a, b=b, op=sym)
        e = f"{a} {op} {b}"
        intent, n, slots = "binary", len(BIN_PHRASINGS), (a, op, b)
        ans = rng.choice(CALC_ANSWERS).format(e=e, r="{r}")
    elif r < 0.7:
        op = rng.choice("+-*/")
        a, b = _num(rng), _num(rng)
        i, ph = _pick(rng, OP_PHRASINGS[op])
        user = ph.format(a=a, b=b)
        e = f"{a} {op} {b}"
        intent, n, slots = "op_" + op, len(OP_PHRASINGS[op]), (a, b)
        ans = rng.choice(CALC_ANSWERS).format(e=e, r="{r}")
    elif r < 0.82:
        p = rng.choice([str(rng.randint(1, 99)), str(rng.choice([5, 10, 15, 20, 25, 50, 75])), _dec(rng)[:4].rstrip(".")])
        x = str(_int(rng, rng.choice([100, 1000, 10000])))
        i, ph = _pick(rng, PCT_PHRASINGS)
        user = ph.format(p=p, x=x)
        e = f"{x} * {p} / 100"
        intent, n, slots = "percent", len(PCT_PHRASINGS), (p, x)
        ans = rng.choice(PCT_ANSWERS).format(p=p, x=x, r="{r}")
    elif r < 0.95:
        a, b, c = (str(_int(rng, 100)) for _ in range(3))
        o1, o2 = rng.choice("+-*/"), rng.choice("+-*")
        form = rng.randrange(3)
        if form == 0:
            e = f"({a} {o1} {b}) {o2} {c}"
        elif form == 1:
            e = f"{a} {o2} ({b} {o1} {c})"
        else:
            e = f"{a} {o1} {b} {o2} {c}"
        i, ph = _pick(rng, TRI_PHRASINGS)
        user = ph.format(e=e)
        intent, n, slots = "three", len(TRI_PHRASINGS), (e,)
        ans = rng.choice(CALC_ANSWERS).format(e=e, r="{r}")
    else:
        a = str(_int(rng, 100))
        i, ph = _pick(rng, SQUARE_PHRASINGS)
        user = ph.format(a=a)
        e = f"{a} * {a}"
        intent, n, slots = "square", len(SQUARE_PHRASINGS), (a,)
        ans = rng.choice(CALC_ANSWERS).format(e=e, r="{r}")
    try:
        result = calc(e)
    except ZeroDivisionError:
        return gen_calculator(rng)
    return Q("calculator", intent, i, n, slots, user, tool="calculator",
             args={"expression": e}, result=result, answer=ans.format(r=result))
