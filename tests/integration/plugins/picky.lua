-- Rejects its config unless ok: true.
return {
    init = function(conf)
        if conf.ok ~= true then error("picky: config.ok must be true", 0) end
    end,
    access = function(ctx) end,
}
