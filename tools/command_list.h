/* One line per subcommand: PD_COMMAND(name, function, one-line help). No include guard on purpose. */
PD_COMMAND("mkmodel", pd_cmd_mkmodel, "write a complete Wan2.1-layout model folder with random weights")
PD_COMMAND("dit", pd_cmd_dit, "one DiT evaluation on a latent, a timestep and a text context")
