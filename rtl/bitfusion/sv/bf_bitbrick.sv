// One BitBrick as a module (the array uses the same function from bf_pkg); for unit tests.
module bf_bitbrick (
    input  logic [1:0] x,
    input  logic       sx,
    input  logic [1:0] y,
    input  logic       sy,
    output logic signed [5:0] p
);
  assign p = bf_pkg::bitbrick(x, sx, y, sy);
endmodule
