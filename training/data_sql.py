"""Questions about the demo sales database answered through the `sql_query` tool
(gen_sql): the intents with their slots, phrasings, SQL templates and answers; the tool
result is the real result of the query on examples/sales.db (_run_sql)."""

from __future__ import annotations

import random

import sales_db
from data_question import Q, _pick
from sales_db import CATEGORIES, COUNTRIES, CUSTOMERS, MONTHS, PRODUCTS

J_P = "FROM orders JOIN products ON orders.product_id = products.id"
J_C = "FROM orders JOIN customers ON orders.customer_id = customers.id"
J_PC = J_P + " JOIN customers ON orders.customer_id = customers.id"
REV = "SUM(orders.quantity * products.price)"

PLURAL = {"Widget": "Widgets", "Puzzle": "Puzzles", "Kite": "Kites", "Gadget": "Gadgets",
          "Sensor": "Sensors", "Cable": "Cables", "Hammer": "Hammers", "Wrench": "Wrenches",
          "Drill": "Drills", "Lamp": "Lamps", "Chair": "Chairs", "Table": "Tables"}
PRODUCT_NAMES = [p[0] for p in PRODUCTS]
GENERIC_SQL_ANSWERS = ["The result is {r}.", "The answer is {r}."]


def _slot_country(rng):
    return {"country": rng.choice(COUNTRIES)}


def _slot_product(rng):
    p = rng.choice(PRODUCT_NAMES)
    return {"product": p, "products": PLURAL[p]}


def _slot_category(rng):
    return {"category": rng.choice(CATEGORIES)}


def _slot_month(rng):
    m = rng.randrange(12)
    return {"month": MONTHS[m], "mm": f"{m + 1:02d}"}


def _slot_customer(rng):
    return {"customer": rng.choice(CUSTOMERS)}


def _slot_n(rng):
    return {"n": rng.choice([2, 3, 3, 4, 5])}


def _slots(*fns):
    def sample(rng):
        d = {}
        for f in fns:
            d.update(f(rng))
        return d
    return sample


# intent: (slot sampler, phrasings, SQL template, answer templates)
SQL_INTENTS = {
    "count_orders": (_slots(), [
        "How many orders are there?", "How many orders do we have?", "What is the total number of orders?",
        "Count the orders.", "How many orders are in the database?"],
        "SELECT COUNT(*) FROM orders",
        ["There are {r} orders.", "We have {r} orders in total."]),
    "count_customers": (_slots(), [
        "How many customers are there?", "How many customers do we have?", "What is the number of customers?",
        "Count the customers.", "How many customers are in the database?"],
        "SELECT COUNT(*) FROM customers",
        ["There are {r} customers.", "We have {r} customers."]),
    "count_products": (_slots(), [
        "How many products are there?", "How many products do we sell?", "Count the products.",
        "What is the number of products?"],
        "SELECT COUNT(*) FROM products",
        ["There are {r} products.", "We sell {r} products."]),
    "customers_in_country": (_slot_country, [
        "How many customers are in {country}?", "How many customers do we have in {country}?",
        "Number of customers from {country}?", "Count the customers in {country}.",
        "How many of our customers live in {country}?"],
        "SELECT COUNT(*) FROM customers WHERE country = '{country}'",
        ["There are {r} customers in {country}.", "{country} has {r} customers."]),
    "customer_names_in_country": (_slot_country, [
        "Which customers are from {country}?", "List the customers in {country}.",
        "Who are our customers in {country}?", "Name the customers from {country}."],
        "SELECT name FROM customers WHERE country = '{country}' ORDER BY name",
        ["The customers in {country} are {r}.", "Customers from {country}: {r}."]),
    "orders_from_country": (_slot_country, [
        "How many orders came from {country}?", "How many orders were placed by customers in {country}?",
        "Number of orders from {country}?", "How many orders do we have from {country}?",
        "Count the orders from {country}."],
        f"SELECT COUNT(*) {J_C} WHERE customers.country = '{{country}}'",
        ["There were {r} orders from {country}.", "Customers in {country} placed {r} orders."]),
    "orders_in_month": (_slot_month, [
        "How many orders were placed in {month}?", "How many orders did we get in {month} 2024?",
        "Number of orders in {month}?", "How many orders were there in {month}?",
        "Count the orders from {month} 2024."],
        "SELECT COUNT(*) FROM orders WHERE order_date LIKE '2024-{mm}-%'",
        ["There were {r} orders in {month}.", "We got {r} orders in {month} 2024."]),
    "orders_of_customer": (_slot_customer, [
        "How many orders did {customer} place?", "How many orders has {customer} made?",
        "Number of orders by {customer}?", "How many times did {customer} order?"],
        f"SELECT COUNT(*) {J_C} WHERE customers.name = '{{customer}}'",
        ["{customer} placed {r} orders.", "{customer} has {r} orders."]),
    "country_of_customer": (_slot_customer, [
        "Which country is {customer} from?", "Where is customer {customer} based?",
        "What country does {customer} live in?", "In which country is {customer}?"],
        "SELECT country FROM customers WHERE name = '{customer}'",
        ["{customer} is from {r}.", "{customer} is based in {r}."]),
    "units_product": (_slot_product, [
        "How many units of {product} were sold?", "How many {products} did we sell?",
        "What is the total quantity of {product} sold?", "How many {products} were sold?",
        "Units sold of {product}?"],
        f"SELECT SUM(orders.quantity) {J_P} WHERE products.name = '{{product}}'",
        ["We sold {r} units of {product}.", "{r} {products} were sold."]),
    "units_product_country": (_slots(_slot_product, _slot_country), [
        "How many {products} were sold in {country}?", "How many units of {product} did customers in {country} buy?",
        "How many {products} did we sell to {country}?", "Units of {product} sold in {country}?"],
        f"SELECT SUM(orders.quantity) {J_PC} WHERE products.name = '{{product}}' AND customers.country = '{{country}}'",
        ["Units of {product} sold in {country}: {r}.", "Customers in {country} bought {r} units of {product}."]),
    "revenue_total": (_slots(), [
        "What is the total revenue?", "How much revenue did we make in total?", "What is our total revenue?",
        "How much money did we make?", "Total revenue?"],
        f"SELECT {REV} {J_P}",
        ["The total revenue is {r}.", "We made {r} in total."]),
    "revenue_product": (_slot_product, [
        "What is the revenue from {product}?", "How much revenue did {product} bring in?",
        "How much money did we make from {products}?", "Revenue of {product}?",
        "What did {products} earn us?"],
        f"SELECT {REV} {J_P} WHERE products.name = '{{product}}'",
        ["{product} brought in {r}.", "The revenue from {product} is {r}."]),
    "revenue_category": (_slot_category, [
        "What is the revenue of the {category} category?", "How much did we earn from {category}?",
        "Revenue for {category} products?", "How much money did {category} products make?",
        "What did the {category} category earn?"],
        f"SELECT {REV} {J_P} WHERE products.category = '{{category}}'",
        ["The {category} category earned {r}.", "Revenue from {category} is {r}."]),
    "revenue_country": (_slot_country, [
        "What is the revenue from {country}?", "How much revenue came from customers in {country}?",
        "How much did customers in {country} spend?", "Revenue from {country}?",
        "How much money did we make in {country}?"],
        f"SELECT {REV} {J_PC} WHERE customers.country = '{{country}}'",
        ["The revenue from {country} is {r}.", "Customers in {country} spent {r}."]),
    "revenue_month": (_slot_month, [
        "What was the revenue in {month}?", "How much did we earn in {month} 2024?",
        "Revenue for {month}?", "How much money did we make in {month}?"],
        f"SELECT {REV} {J_P} WHERE orders.order_date LIKE '2024-{{mm}}-%'",
        ["The revenue in {month} was {r}.", "We earned {r} in {month} 2024."]),
    "revenue_product_month": (_slots(_slot_product, _slot_month), [
        "What was the revenue from {product} in {month}?", "How much did {products} earn in {month}?",
        "Revenue of {product} in {month} 2024?", "How much money did {products} make in {month}?"],
        f"SELECT {REV} {J_P} WHERE products.name = '{{product}}' AND orders.order_date LIKE '2024-{{mm}}-%'",
        ["{product} earned {r} in {month}.", "The revenue from {product} in {month} was {r}."]),
    "price_product": (_slot_product, [
        "What is the price of {product}?", "How much does a {product} cost?", "What does {product} cost?",
        "Price of {product}?", "How expensive is a {product}?"],
        "SELECT price FROM products WHERE name = '{product}'",
        ["A {product} costs {r}.", "The price of {product} is {r}."]),
    "category_of_product": (_slot_product, [
        "Which category is {product} in?", "What category does {product} belong to?",
        "What kind of product is {product}?", "In which category is {product}?"],
        "SELECT category FROM products WHERE name = '{product}'",
        ["{product} is in the {r} category.", "{product} belongs to {r}."]),
    "products_in_category": (_slot_category, [
        "Which products are in the {category} category?", "List the {category} products.",
        "What {category} products do we sell?", "Which products belong to {category}?",
        "Name the products in {category}."],
        "SELECT name FROM products WHERE category = '{category}' ORDER BY name",
        ["The {category} products are {r}.", "{category}: {r}."]),
    "avg_price": (_slots(), [
        "What is the average product price?", "What is the average price of our products?",
        "Average price of a product?", "How much does a product cost on average?"],
        "SELECT AVG(price) FROM products",
        ["The average price is {r}.", "A product costs {r} on average."]),
    "avg_price_category": (_slot_category, [
        "What is the average price of {category} products?", "Average price in the {category} category?",
        "How much does a {category} product cost on average?", "What do {category} products cost on average?"],
        "SELECT AVG(price) FROM products WHERE category = '{category}'",
        ["The average price of {category} products is {r}.", "{category} products cost {r} on average."]),
    "most_expensive": (_slots(), [
        "What is the most expensive product?", "Which product costs the most?",
        "Which is our priciest product?", "Most expensive product?"],
        "SELECT name, price FROM products ORDER BY price DESC LIMIT 1",
        ["The most expensive product is {r}.", "Most expensive: {r}."]),
    "cheapest": (_slots(), [
        "What is the cheapest product?", "Which product costs the least?",
        "Which is our least expensive product?", "Cheapest product?"],
        "SELECT name, price FROM products ORDER BY price LIMIT 1",
        ["The cheapest product is {r}.", "Cheapest: {r}."]),
    "top_products": (_slot_n, [
        "What are the top {n} products by revenue?", "Which {n} products made the most revenue?",
        "Top {n} products by sales?", "Show the {n} best-selling products by revenue.",
        "List the top {n} products by revenue."],
        f"SELECT products.name, {REV} AS total {J_P} GROUP BY products.name ORDER BY total DESC LIMIT {{n}}",
        ["The top {n} products by revenue are {r}.", "Top {n}: {r}."]),
    "best_product": (_slots(), [
        "Which product made the most revenue?", "What is our best-selling product by revenue?",
        "Which product earned the most?", "Top product by revenue?"],
        f"SELECT products.name, {REV} AS total {J_P} GROUP BY products.name ORDER BY total DESC LIMIT 1",
        ["The best product by revenue is {r}.", "Top product: {r}."]),
    "top_countries": (_slot_n, [
        "Which {n} countries have the most orders?", "What are the top {n} countries by number of orders?",
        "Top {n} countries by orders?", "List the {n} countries with the most orders."],
        f"SELECT customers.country, COUNT(*) AS total {J_C} GROUP BY customers.country ORDER BY total DESC LIMIT {{n}}",
        ["The top {n} countries by orders are {r}.", "Top {n}: {r}."]),
    "top_customers": (_slot_n, [
        "Who are the top {n} customers by revenue?", "Which {n} customers spent the most?",
        "Top {n} customers by spending?", "List the {n} customers who spent the most."],
        f"SELECT customers.name, {REV} AS total {J_PC} GROUP BY customers.name ORDER BY total DESC LIMIT {{n}}",
        ["The top {n} customers are {r}.", "Top {n} customers: {r}."]),
    "customers_per_country": (_slots(), [
        "How many customers are in each country?", "Customers per country?",
        "Show the number of customers by country.", "Count customers per country."],
        "SELECT country, COUNT(*) FROM customers GROUP BY country ORDER BY country",
        ["Customers per country: {r}.", "Here are the counts: {r}."]),
    "revenue_per_category": (_slots(), [
        "What is the revenue per category?", "How much did each category earn?",
        "Revenue by category?", "Show revenue for each category."],
        f"SELECT products.category, {REV} AS total {J_P} GROUP BY products.category ORDER BY total DESC",
        ["Revenue per category: {r}.", "Here is the revenue by category: {r}."]),
}
SQL_INTENT_NAMES = list(SQL_INTENTS)


def gen_sql(rng: random.Random) -> Q:
    intent = rng.choice(SQL_INTENT_NAMES)
    sampler, phrasings, sql_t, answers = SQL_INTENTS[intent]
    slots = sampler(rng)
    i, ph = _pick(rng, phrasings)
    user = ph.format(**slots)
    sql = sql_t.format(**slots)
    result = _run_sql(sql)
    if result in ("NULL", "no rows"):
        return gen_sql(rng)
    ans_t = rng.choice(answers) if rng.random() < 0.85 else rng.choice(GENERIC_SQL_ANSWERS)
    answer = ans_t.format(r=result, **slots)
    key = tuple(sorted((k, v) for k, v in slots.items() if k not in ("products", "mm")))
    return Q("sql", intent, i, len(phrasings), key, user, tool="sql_query",
             args={"query": sql}, result=result, answer=answer)


_sql_cache: dict[str, str] = {}


def _run_sql(sql: str) -> str:
    if sql not in _sql_cache:
        _sql_cache[sql] = sales_db.run_query(sql)
    return _sql_cache[sql]
