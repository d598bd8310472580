// robot-toy.pov -- KoalaBooth example subject "robot-toy"
//
// A small red wind-up tin robot toy, photographed six times the way a user
// would photograph their own toy: different viewpoints, different places,
// different light.  Written from scratch for KoalaBooth; CC0-1.0.
//
// Pick the picture with a declared variable (see render.sh):
//   povray robot-toy.pov Declare=Shot=3 +W512 +H512 +FN +Orobot-toy-3.png
// Shot 1 wooden table, 2 lawn, 3 studio backdrop, 4 kitchen tiles,
// 5 checkerboard floor, 6 blue blanket on a sofa.
//
// Identity features (what personalisation should learn): glossy red boxy body,
// silver head with two glowing cyan eyes and a black grille mouth, red ear
// bolts, yellow antenna ball, blue chest disc with a yellow five-point star,
// three buttons (green, white, blue) under it, its left arm raised in a wave,
// grey claw hands, black feet, a brass wind-up key on the back.

#version 3.7;

#ifndef (Shot) #declare Shot = 1; #end

global_settings {
  assumed_gamma 1.0
  max_trace_level 8
}

#include "colors.inc"
#include "shapes.inc"   // Round_Box

// ---------------------------------------------------------------- materials
#declare T_Red = texture {
  pigment { color rgb <0.75, 0.05, 0.04> }
  finish { ambient 0 diffuse 0.75 specular 0.6 roughness 0.008
           reflection { 0.03, 0.12 fresnel on } conserve_energy }
}
#declare T_Silver = texture {
  pigment { color rgb <0.72, 0.74, 0.78> }
  finish { ambient 0 diffuse 0.55 specular 0.8 roughness 0.004 metallic 0.6
           reflection { 0.15 metallic } }
}
#declare T_Grey = texture {
  pigment { color rgb <0.42, 0.44, 0.47> }
  finish { ambient 0 diffuse 0.7 specular 0.4 roughness 0.01 metallic 0.4 }
}
#declare T_Black = texture {
  pigment { color rgb <0.02, 0.02, 0.025> }
  finish { ambient 0 diffuse 0.6 specular 0.5 roughness 0.01 }
}
#declare T_Yellow = texture {
  pigment { color rgb <1.0, 0.78, 0.02> }
  finish { ambient 0 diffuse 0.8 specular 0.5 roughness 0.01 }
}
#declare T_Blue = texture {
  pigment { color rgb <0.05, 0.22, 0.75> }
  finish { ambient 0 diffuse 0.75 specular 0.5 roughness 0.01 }
}
#declare T_Brass = texture {
  pigment { color rgb <0.78, 0.6, 0.22> }
  finish { ambient 0 diffuse 0.5 specular 0.8 roughness 0.006 metallic 0.8
           reflection { 0.2 metallic } }
}
#declare T_Eye = texture {
  pigment { color rgb <0.35, 0.95, 1.0> }
  finish { ambient 0 emission 0.55 diffuse 0.5 specular 0.9 roughness 0.002 }
}

// ---------------------------------------------------------------- the robot
// Stands on y = 0, faces -z, about 1.65 units tall.
#declare ClawHand = union {
  difference {
    torus { 0.085, 0.028 rotate x*90 }          // ring in the x-y plane
    box { <-0.05, -0.2, -0.1>, <0.05, -0.03, 0.1> } // gap at the bottom
  }
  cylinder { <0, 0.06, 0>, <0, 0.14, 0>, 0.045 } // wrist
  texture { T_Grey }
}

#declare Arm = union {   // hangs from the shoulder at the origin, along -y
  sphere { 0, 0.085 texture { T_Grey } }
  cylinder { 0, <0, -0.42, 0>, 0.065 texture { T_Red } }
  object { ClawHand translate <0, -0.56, 0> }
}

#declare Robot = union {
  // feet and legs
  #for (S, -1, 1, 2)
    object { Round_Box(<-0.11, 0, -0.18>, <0.11, 0.09, 0.12>, 0.03, no)
             texture { T_Black } translate x*S*0.17 }
    cylinder { <S*0.17, 0.08, 0>, <S*0.17, 0.32, 0>, 0.07 texture { T_Grey } }
    // knee ridges
    torus { 0.072, 0.012 translate <S*0.17, 0.2, 0> texture { T_Silver } }
  #end

  // body
  object { Round_Box(<-0.36, 0.3, -0.26>, <0.36, 0.96, 0.26>, 0.07, no)
           texture { T_Red } }
  // silver belt
  object { Round_Box(<-0.375, 0.36, -0.275>, <0.375, 0.42, 0.275>, 0.02, no)
           texture { T_Silver } }

  // chest: blue disc with a yellow five-point star
  cylinder { <0, 0.72, -0.255>, <0, 0.72, -0.285>, 0.17 texture { T_Blue } }
  torus { 0.17, 0.012 rotate x*90 translate <0, 0.72, -0.27> texture { T_Silver } }
  prism {
    linear_sweep linear_spline 0, 0.02, 11,
    #for (I, 0, 10)
      #local Ang = radians(90 + I*36);
      #local Rad = (mod(I, 2) = 0 ? 0.13 : 0.055);
      #if (I > 0) , #end
      <Rad*cos(Ang), Rad*sin(Ang)>
    #end
    rotate -x*90                       // prism's y axis -> -z (towards viewer)
    translate <0, 0.72, -0.283>
    texture { T_Yellow }
  }
  // three buttons under the star
  cylinder { <-0.13, 0.49, -0.255>, <-0.13, 0.49, -0.29>, 0.04
             texture { pigment { rgb <0.05, 0.7, 0.1> } finish { specular 0.6 roughness 0.01 } } }
  cylinder { <0, 0.49, -0.255>, <0, 0.49, -0.29>, 0.04
             texture { pigment { rgb <0.95, 0.95, 0.92> } finish { specular 0.6 roughness 0.01 } } }
  cylinder { <0.13, 0.49, -0.255>, <0.13, 0.49, -0.29>, 0.04 texture { T_Blue } }

  // back: grey hatch with four screws and a brass wind-up key
  object { Round_Box(<-0.22, 0.5, 0.25>, <0.22, 0.86, 0.275>, 0.01, no) texture { T_Grey } }
  #for (SX, -1, 1, 2) #for (SY, -1, 1, 2)
    sphere { <SX*0.18, 0.68 + SY*0.14, 0.27>, 0.018 texture { T_Silver } }
  #end #end
  union {
    cylinder { <0, 0, 0>, <0, 0, 0.14>, 0.025 }
    union {          // the two loops of the key
      torus { 0.07, 0.018 rotate z*90 translate <0, 0.075, 0> }
      torus { 0.07, 0.018 rotate z*90 translate <0, -0.075, 0> }
      scale <1, 1, 0.9> translate z*0.16
    }
    rotate z*25
    translate <0, 0.68, 0.275>
    texture { T_Brass }
  }

  // arms: its right arm (-x) hangs, its left arm (+x) is raised in a wave
  object { Arm rotate z*-8 translate <-0.45, 0.86, 0> }
  object { Arm rotate z*150 translate <0.45, 0.86, 0> }

  // neck
  cylinder { <0, 0.95, 0>, <0, 1.04, 0>, 0.09 texture { T_Grey } }
  torus { 0.09, 0.015 translate y*1.0 texture { T_Silver } }

  // head
  object { Round_Box(<-0.29, 1.03, -0.23>, <0.29, 1.44, 0.23>, 0.06, no)
           texture { T_Silver } }
  // eyes: glowing cyan with black pupils and red rims
  #for (S, -1, 1, 2)
    torus { 0.075, 0.018 rotate x*90 translate <S*0.125, 1.29, -0.232> texture { T_Red } }
    sphere { <S*0.125, 1.29, -0.2>, 0.075 texture { T_Eye } }
    sphere { <S*0.125, 1.29, -0.262>, 0.026 texture { T_Black } }
  #end
  // grille mouth
  object { Round_Box(<-0.15, 1.1, -0.245>, <0.15, 1.18, -0.22>, 0.01, no) texture { T_Black } }
  #for (I, -1, 1, 1)
    cylinder { <I*0.07, 1.105, -0.247>, <I*0.07, 1.175, -0.247>, 0.012 texture { T_Silver } }
  #end
  // ear bolts
  #for (S, -1, 1, 2)
    cylinder { <S*0.28, 1.25, 0>, <S*0.34, 1.25, 0>, 0.07 texture { T_Red } }
    cylinder { <S*0.33, 1.25, 0>, <S*0.36, 1.25, 0>, 0.03 texture { T_Silver } }
  #end
  // antenna
  cylinder { <0, 1.43, 0>, <0, 1.6, 0>, 0.014 texture { T_Silver } }
  sphere { <0, 1.64, 0>, 0.05 texture { T_Yellow } }
}

// ---------------------------------------------------------------- helpers
#macro Cam(Az, El, Dist, LookY, Ang)
  // Az: degrees around the robot, 0 = straight in front, + = to its left
  // (the viewer's right).  El: degrees above horizontal.
  camera {
    perspective
    location vrotate(vrotate(<0, 0, -Dist>, x*El), y*-Az) + y*LookY
    look_at <0, LookY, 0>
    right x*image_width/image_height
    angle Ang
  }
#end

#macro AreaLight(Pos, Col, Size)
  light_source { Pos color Col
    area_light x*Size, z*Size, 9, 9 adaptive 2 circular orient }
#end

// ---------------------------------------------------------------- shots
#switch (Shot)

// 1: on a wooden kitchen table, warm window light from the left,
//    three-quarter view from the robot's right, a bit above.
#case (1)
  Cam(-35, 18, 4.0, 0.78, 38)
  AreaLight(<-6, 7, -3>, rgb <1.25, 1.1, 0.9>, 2.5)
  light_source { <4, 3, -6> color rgb 0.35 shadowless }
  plane { y, 0
    texture {
      pigment { wood turbulence 0.06 octaves 4 lambda 3
        color_map {
          [0.0 rgb <0.55, 0.33, 0.15>] [0.45 rgb <0.62, 0.4, 0.19>]
          [0.7 rgb <0.45, 0.25, 0.1>]  [1.0 rgb <0.55, 0.33, 0.15>] }
        scale <0.18, 0.18, 1> rotate y*80 rotate x*3 }
      finish { ambient 0 diffuse 0.75 specular 0.25 roughness 0.03
               reflection 0.04 }
    }
  }
  // table boards
  #for (I, -10, 10)
    box { <-20, -0.01, I*0.7 - 0.004>, <20, 0.002, I*0.7 + 0.004>
          pigment { rgb <0.2, 0.11, 0.05> } rotate y*-10 }
  #end
  // cream wall far behind
  plane { z, 7 pigment { rgb <0.85, 0.8, 0.7> } finish { ambient 0 diffuse 0.8 } rotate y*-30 }
  background { rgb <0.8, 0.75, 0.65> }
#break

// 2: outdoors on a lawn, sunny sky, low view from the robot's left front.
#case (2)
  Cam(40, 6, 3.6, 0.7, 40)
  light_source { <-30, 45, -25> color rgb <1.3, 1.25, 1.1> }
  light_source { <10, 20, -10> color rgb <0.25, 0.3, 0.4> shadowless } // sky fill
  sky_sphere {
    pigment { gradient y
      color_map { [0 rgb <0.75, 0.85, 0.95>] [0.4 rgb <0.3, 0.52, 0.9>] [1 rgb <0.15, 0.35, 0.8>] } }
    pigment { bozo turbulence 0.8 octaves 5 omega 0.6
      color_map { [0 rgbt <1, 1, 1, 0>] [0.35 rgbt <1, 1, 1, 0.4>] [0.55 rgbt <1, 1, 1, 1>] [1 rgbt <1, 1, 1, 1>] }
      scale <0.2, 0.05, 0.2> }
  }
  plane { y, 0
    texture {
      pigment { granite turbulence 0.5
        color_map { [0 rgb <0.1, 0.33, 0.05>] [0.5 rgb <0.2, 0.5, 0.1>]
                    [0.8 rgb <0.3, 0.55, 0.12>] [1 rgb <0.15, 0.4, 0.06>] }
        scale <0.15, 1, 0.15> }
      normal { bumps 1.2 scale 0.015 }
      finish { ambient 0 diffuse 0.8 specular 0.05 }
    }
  }
  // short grass blades around the feet
  #declare R = seed(42);
  #for (I, 0, 1400)
    #local P = <rand(R)*5 - 2.5, 0, rand(R)*5 - 1.5>;
    #local H = 0.05 + rand(R)*0.09;
    cone { P, 0.008, P + <rand(R)*0.04 - 0.02, H, rand(R)*0.04 - 0.02>, 0
           pigment { rgb <0.12 + rand(R)*0.15, 0.4 + rand(R)*0.2, 0.06> }
           finish { ambient 0 diffuse 0.8 } }
  #end
  // a hedge far behind
  sphere { 0, 1 scale <14, 2.2, 2> translate <4, 0, 16>
    pigment { granite color_map { [0 rgb <0.05, 0.2, 0.04>] [1 rgb <0.12, 0.35, 0.08>] } scale 0.6 }
    normal { bumps 1 scale 0.3 } finish { ambient 0 diffuse 0.7 } }
#break

// 3: plain studio sweep backdrop, soft key and fill, straight-on front view.
#case (3)
  Cam(0, 8, 4.2, 0.82, 34)
  AreaLight(<-3, 5, -5>, rgb 1.0, 3)
  AreaLight(<4, 3, -4>, rgb 0.45, 3)
  light_source { <0, 6, 4> color rgb 0.5 } // rim light
  // sweep: floor, curve, wall
  #declare StudioT = texture { pigment { rgb <0.78, 0.82, 0.88> } finish { ambient 0 diffuse 0.85 } }
  union {
    box { <-20, -1, -20>, <20, 0, 3> }
    difference {
      cylinder { <-20, 2, 3>, <20, 2, 3>, 2 }
      cylinder { <-21, 2, 3>, <21, 2, 3>, 1.99 }
      box { <-21, 2, 3>, <21, 5, 6> } box { <-21, -1, 0>, <21, 5, 3> }
    }
    box { <-20, 2, 5>, <20, 20, 6> }
    texture { StudioT }
  }
  background { rgb <0.78, 0.82, 0.88> }
#break

// 4: kitchen counter in front of white subway tiles, seen from the robot's
//    left-back so the wind-up key shows; cool daylight from a window.
#case (4)
  Cam(125, 14, 3.8, 0.8, 40)
  AreaLight(<6, 6, 2>, rgb <1.05, 1.1, 1.2>, 3)
  light_source { <5, 4, 6> color rgb 0.55 shadowless }
  // dark speckled granite counter top
  plane { y, 0
    texture {
      pigment { granite
        color_map { [0 rgb 0.05] [0.5 rgb 0.16] [0.7 rgb <0.3, 0.28, 0.25>] [1 rgb 0.08] }
        scale 0.4 }
      finish { ambient 0 diffuse 0.6 specular 0.6 roughness 0.005 reflection 0.08 }
    }
  }
  // tiled walls behind (seen from this side of the robot, "behind" is +x/-z)
  #declare TileT = texture {
    pigment { brick color rgb 0.62, color rgb <0.95, 0.95, 0.93>
              brick_size <0.4, 0.2, 0.4> mortar 0.012 }
    finish { ambient 0 diffuse 0.8 specular 0.6 roughness 0.004 reflection 0.03 }
  }
  // offset the pattern so each wall cuts through the middle of a tile row
  plane { x, -1.6 texture { TileT translate <0.13, 0, 0.13> rotate y*90 } }
  plane { z, -2.0 texture { TileT translate <0.13, 0, 0.13> } }
  background { rgb <0.9, 0.92, 0.95> }
  // a ceramic canister on the counter, for context
  cylinder { <-0.9, 0, -1.3>, <-0.9, 0.8, -1.3>, 0.3
    pigment { rgb <0.25, 0.45, 0.55> } finish { ambient 0 diffuse 0.7 specular 0.6 roughness 0.005 } }
#break

// 5: black-and-white checkerboard floor, high view looking down from the
//    robot's right front, bright overhead light.
#case (5)
  Cam(-45, 45, 4.0, 0.65, 36)
  AreaLight(<2, 9, -2>, rgb 1.15, 3)
  light_source { <-6, 4, -6> color rgb 0.4 shadowless }
  plane { y, 0
    texture {
      pigment { checker rgb <0.04, 0.04, 0.04>, rgb <0.93, 0.93, 0.9> scale 0.5 }
      finish { ambient 0 diffuse 0.8 specular 0.6 roughness 0.01 reflection 0.1 }
    }
  }
  background { rgb 0.3 }
#break

// 6: on a blue fleece blanket on a sofa, warm evening lamp from the right,
//    low close three-quarter view from the robot's left.
#case (6)
  Cam(28, 10, 3.3, 0.85, 40)
  AreaLight(<5, 5, -4>, rgb <1.3, 1.05, 0.75>, 2)
  light_source { <-5, 3, -5> color rgb <0.25, 0.28, 0.4> shadowless }
  // blanket: soft bumpy folds
  plane { y, 0
    texture {
      pigment { rgb <0.18, 0.3, 0.62> }
      normal { average normal_map {
        [1 wrinkles 0.6 scale 0.6]
        [1 bumps 0.5 scale 0.01] } }
      finish { ambient 0 diffuse 0.85 }
    }
  }
  // sofa back cushion and a patterned throw pillow
  object { Round_Box(<-5, 0, 1.6>, <5, 2.6, 3.0>, 0.4, no)
    pigment { rgb <0.5, 0.42, 0.33> } normal { bumps 0.2 scale 0.02 } finish { ambient 0 diffuse 0.8 } }
  object { Round_Box(<-0.6, 0, -0.4>, <0.6, 1.1, 0.4>, 0.3, no)
    pigment { gradient x color_map { [0 rgb <0.95, 0.8, 0.3>] [0.5 rgb <0.95, 0.8, 0.3>] [0.5 rgb <0.9, 0.9, 0.85>] [1 rgb <0.9, 0.9, 0.85>] } scale 0.25 }
    finish { ambient 0 diffuse 0.8 }
    rotate y*-20 rotate z*-12 translate <-1.5, 0, 1.2> }
#break

#else
  #error "Shot must be 1 to 6"
#end

object { Robot }
