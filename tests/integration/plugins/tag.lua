-- Touches every phase: request header, ctx.vars, response header, log.
local P = {}

function P.access(ctx, conf)
    ctx.vars.tagged = true
    ctx:set_header("X-Plugin", "tag")
end

function P.response(ctx, conf)
    if ctx.vars.tagged then
        ctx:set_response_header("X-Plugin-Seen", ctx.status)
    end
end

function P.log(ctx, conf)
    gw.log("info", "tag:", ctx.method, ctx.path, ctx.status, ctx.upstream_address)
end

return P
