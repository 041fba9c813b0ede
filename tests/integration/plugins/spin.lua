-- Runs away on /spin; the runaway guard must stop it.
return {
    access = function(ctx)
        if ctx.path == "/spin" then
            while true do end
        end
    end,
}
