"""Drives mesh-mcp with the official MCP Python SDK (PyPI `mcp`), a client nobody here wrote.

Usage: mcp_client.py PLAN_JSON
PLAN_JSON: {"http": URL, "token": T} or {"stdio": [command, args...]}, plus "calls": a list of
[tool, arguments]; a string argument "$plan_id" is replaced by the plan id the last call returned;
optionally "subscribe": {"uri": U, "put": URL, "body": TEXT}: subscribe to U, PUT TEXT to URL
(a change of the mesh), and wait up to 30 s for `notifications/resources/updated` of U.
Prints one JSON document: server info, the tools with their annotations and schemas, each call's
result (error flag, structured content, text), the resources, the prompts and the updates seen.
"""

import asyncio
import json
import sys

import anyio
import httpx2
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client


def substitute(args, plan_id):
    return {k: (plan_id if v == "$plan_id" else v) for k, v in args.items()}


async def drive(read, write, plan):
    out = {"calls": [], "updated": []}
    updated = anyio.Event()

    async def on_message(message):
        uri = getattr(getattr(message, "params", None), "uri", None)
        if getattr(message, "method", "") == "notifications/resources/updated" and uri:
            out["updated"].append(str(uri))
            updated.set()

    async with ClientSession(read, write, message_handler=on_message) as s:
        init = await s.initialize()
        out["server"] = init.server_info.name
        tools = await s.list_tools()
        out["tools"] = {
            t.name: {
                "read_only": t.annotations.read_only_hint if t.annotations else None,
                "destructive": t.annotations.destructive_hint if t.annotations else None,
                "schema": t.input_schema,
                "description": t.description,
            }
            for t in tools.tools
        }
        plan_id = None
        for name, args in plan.get("calls", []):
            r = await s.call_tool(name, substitute(args, plan_id))
            structured = r.structured_content
            if isinstance(structured, dict) and "plan_id" in structured:
                plan_id = structured["plan_id"]
            out["calls"].append(
                {
                    "tool": name,
                    "is_error": r.is_error,
                    "structured": structured,
                    "text": r.content[0].text if r.content else "",
                }
            )
        resources = await s.list_resources()
        out["resources"] = [str(r.uri) for r in resources.resources]
        graph = await s.read_resource("mesh://graph")
        out["graph_resource"] = json.loads(graph.contents[0].text)
        prompts = await s.list_prompts()
        out["prompts"] = [p.name for p in prompts.prompts]
        sub = plan.get("subscribe")
        if sub:
            await s.subscribe_resource(sub["uri"])
            async with httpx2.AsyncClient(timeout=10) as http:
                r = await http.put(sub["put"], content=sub["body"])
                r.raise_for_status()
            with anyio.move_on_after(30):
                await updated.wait()
    return out


async def main():
    plan = json.loads(sys.argv[1])
    if "http" in plan:
        headers = {"Authorization": f"Bearer {plan['token']}"} if plan.get("token") else {}
        async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
            async with streamable_http_client(plan["http"], http_client=http) as streams:
                out = await drive(streams[0], streams[1], plan)
    else:
        command, *args = plan["stdio"]
        params = StdioServerParameters(command=command, args=args)
        async with stdio_client(params) as streams:
            out = await drive(streams[0], streams[1], plan)
    print(json.dumps(out))


asyncio.run(main())
