-- Fails on purpose: in access on /boom, in log on /boom-log.
return {
    access = function(ctx)
        if ctx.path == "/boom" then error("boom on purpose") end
    end,
    log = function(ctx)
        if ctx.path == "/boom-log" then error("boom in log on purpose") end
    end,
}
