-- Short-circuits requests that carry X-Deny.
return {
    access = function(ctx, conf)
        if ctx:header("X-Deny") then
            return ctx:respond(403, '{"error":"forbidden"}', { ["Content-Type"] = "application/json" })
        end
    end,
}
